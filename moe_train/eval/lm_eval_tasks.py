"""lm-evaluation-harness tasks for the configured benchmarks, so the same questions can be scored by
that harness: per benchmark a task YAML and the normalised questions as JSONL.

    python -m moe_train.eval.lm_eval_tasks --config configs/demo.yaml --out out   # out/lm_eval_tasks/
    lm_eval --model hf --model_args pretrained=out/train/export \\
        --include_path out/lm_eval_tasks --tasks medbabel_medqa_sample

`make eval` writes the same files under OUT/eval/lm_eval_tasks/. Each JSONL row carries the question
as `pipeline.benchmarks` read it (question, context, options, answer letters) and, for the harness,
`prompt` (the protocol's user turn in the training chat format, up to the option letter),
`choices` (the option letters as the protocol writes them) and `gold` (the answer's index). The task
is `output_type: multiple_choice` (log-likelihood of each letter after the prompt, `acc`), zero-shot;
`target_delimiter: ""` keeps the harness from putting a space between the prompt and the letter.
Multi-answer questions have no single gold index and are left out (counted in `lm_eval_tasks.json`).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import yaml

from moe_train.eval.mcq import Protocol
from pipeline import atomic
from pipeline.benchmarks import BenchmarkRead


def task_name(benchmark: str) -> str:
    return "medbabel_" + re.sub(r"[^0-9A-Za-z_]+", "_", benchmark).strip("_").lower()


def task_rows(read: BenchmarkRead, protocol: Protocol, chat_template: str) -> list[dict]:
    before_question, rest = chat_template.split("{q}")
    between = rest.split("{a}")[0]
    rows = []
    for item in read.items:
        if item.multi:
            continue
        labels = [label for label, _ in item.options]
        lead = protocol.answer_text(item, labels[0]).split(f"({labels[0]})")[0] + "("
        rows.append(
            {
                "id": item.id,
                "language": item.language,
                "source": item.source,
                "question": item.question,
                "context": item.context,
                "options": [text for _, text in item.options],
                "answers": list(item.answers),
                "prompt": f"{before_question}{protocol.user_message(item)}{between}{lead}",
                "choices": labels,
                "gold": item.letters.index(item.answers[0]),
            }
        )
    return rows


def task_yaml(name: str, data_file: Path, protocol: Protocol) -> dict:
    return {
        "task": name,
        "tag": ["medbabel"],
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data_file)}},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "{{prompt}}",
        "doc_to_choice": "{{choices}}",
        "doc_to_target": "{{gold}}",
        "target_delimiter": "",
        "num_fewshot": 0,
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 1.0, "protocol": protocol.name},
    }


def write_tasks(reads: list[BenchmarkRead], protocol: Protocol, chat_template: str, directory: Path) -> dict:
    """One `<task>.yaml` and `<task>.jsonl` per benchmark in `directory`; returns what was written."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    for read in reads:
        name = task_name(read.name)
        rows = task_rows(read, protocol, chat_template)
        data_file = (directory / f"{name}.jsonl").resolve()
        atomic.write_text(data_file, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        config = yaml.safe_dump(task_yaml(name, data_file, protocol), sort_keys=False, allow_unicode=True)
        atomic.write_text(directory / f"{name}.yaml", config)
        written[read.name] = {
            "task": name,
            "questions": len(rows),
            "left_out_multi_answer": sum(item.multi for item in read.items),
        }
    atomic.write_text(directory / "lm_eval_tasks.json", json.dumps(written, indent=2) + "\n")
    return written


def main(argv: list[str] | None = None) -> int:
    """Write the tasks of a config's `eval.benchmarks` without a model (`make eval` writes them too)."""
    from moe_train.eval.protocols import protocol_for
    from pipeline.benchmarks import read_configured
    from pipeline.config import ConfigError, load_config
    from pipeline.registry import load_registry

    parser = argparse.ArgumentParser(prog="python -m moe_train.eval.lm_eval_tasks", description=main.__doc__)
    parser.add_argument("--config", default="configs/demo.yaml", help="run config (YAML)")
    parser.add_argument("--out", default="out", help="output directory; the tasks go to OUT/lm_eval_tasks")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config)
        reads = read_configured(
            cfg.eval.benchmarks, cfg, load_registry(cfg.registry_path()), "eval.benchmarks"
        )
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    directory = Path(args.out) / "lm_eval_tasks"
    written = write_tasks(reads, protocol_for(cfg.eval.protocol), cfg.train.chat_template, directory)
    for name, task in written.items():
        print(f"{directory / task['task']}.yaml: {task['questions']} questions ({name})")
    print(f"lm_eval --model hf --model_args pretrained=MODEL --include_path {directory} --tasks TASK")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
