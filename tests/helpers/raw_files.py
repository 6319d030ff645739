"""The real raw-format files of `../shared/data/raw` (its README names their origin), one per reader
format: read by the collect tests and by `bench/bench_extract.py`."""

RAW_FILES = {
    "warc": "warc_resiliparse_cc_sample.warc.gz",
    "html": "html_readability_webmd_superbugs_en.html",
    "pdf": "pdf_scipdf_futoma2017_sepsis_en.pdf",
    "jats": "jats_pubmedparser_bmc_oral_health_1472-6831-8-11.nxml",
    "medline": "medline_biopython_pubmed2.xml",
    "mediawiki": "mediawiki_gensim_enwiki_table_markup.xml.bz2",
    "docx": "docx_unstructured_handbook_1p.docx",
    "epub": "epub_unstructured_winter_sports.epub",
}
