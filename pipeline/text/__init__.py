"""Text algorithms: normalisation, segmentation, MinHash, the benchmark n-gram index, fastText language ID
and its verification, quality signals, PII, the medical classifier and the Qwen2 token counter.

They work on strings and registry entries; none reads or writes records (that is pipeline/record_io.py)."""
