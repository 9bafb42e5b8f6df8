"""``sapo-vl eval``: score benchmarks from a model directory or from a samples file.

Examples::

    sapo-vl eval --tasks easy_vqa --model runs/demo/checkpoints/latest --output-dir out/easy --limit 8 --n 4 --k 1,2,4
    sapo-vl eval --tasks humaneval --samples vllm_samples.jsonl --output-dir out/he
    sapo-vl eval --tasks mathvista_testmini --data-path mathvista_testmini=/data/MathVista --model ckpt
    sapo-vl eval --tasks humaneval --write-prompts prompts.jsonl      # prompts for an external generator
    sapo-vl eval --tasks my_task --import my_plugin --model CKPT    # a task over a plug-in's registered dataset
    sapo-vl eval --list-tasks
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path
from sapo_vl.commands.eval_prompts import write_prompts
from sapo_vl.errors import UserError
from sapo_vl.evaluation.harness import EvalConfig, run_eval
from sapo_vl.evaluation.tasks import available_tasks, task_file
from sapo_vl.evaluation.writers import markdown_table, sanitize_model_name
from sapo_vl.plugins import import_plugins, load_entry_points, split_imports

EPILOG = """\
tasks:
  A task is a YAML file. Names resolve to <name>.yaml in $SAPO_VL_EVAL_DIR, in an eval/ directory found walking
  up from the current directory or from the installed package, then in the tasks bundled with the package, or to
  a task a plug-in registered (sapo_vl.evaluation.tasks.TASKS). A path to any .yaml file also works. A task may
  read any registered dataset (source: {type: registered, name: NAME}), a plug-in's too (--import MODULE). Tasks
  that resolve here:
{tasks}

samples file (--samples), JSON Lines, one object per line:
  {"doc_id": "HumanEval/0", "completions": ["...", "..."]}   all completions of a doc, or
  {"doc_id": "HumanEval/0", "completion": "..."}             one completion per line (lines accumulate)
  "task_id" or "id" may replace "doc_id" (so human-eval / evalplus sample files work as they are), "resps" may
  replace "completions" (so samples_<task>.jsonl from a previous run can be re-scored). Add "task": NAME to each
  line when several tasks are evaluated at once. --write-prompts FILE lists every doc id with its prompt,
  images and an OpenAI-style "messages" field (images as data URIs) for a vLLM / OpenAI-compatible server.

outputs (--output-dir), in lmms-eval's layout:
  results.json            results / configs / versions / n-shot / higher_is_better / n-samples / config
                          (model fingerprint, generation settings) / git_hash / date
  samples_<task>.jsonl    per doc: doc_id, target, resps (completions), filtered_resps (extracted answers),
                          rewards, verdicts, n, n_correct, official, status, gen_kwargs. Append-only: a rerun skips the
                          docs already there (a different model or settings is refused; --overwrite clears).
  summary.md              the markdown table printed at the end
  exports/<task>/samples.jsonl, evalplus_samples.jsonl   human-eval / evalplus inputs (code tasks)

metrics: a task's official metric (the benchmark's own definition, "official:" in its YAML) comes first, marked
"(official)"; then the verifier's: pass@1 is the mean over docs of c/n; pass@k (k <= n only) is the unbiased
estimator 1 - C(n-c, k)/C(n, k) of Chen et al. 2021; maj@n (majority vote over extracted answers) when n > 1.
"""


def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from exc
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected integers >= 1, got {text!r}")
    return values


def _data_path(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected TASK=PATH, got {text!r}")
    task, path = text.split("=", 1)
    return task.strip(), path.strip()


def build_parser() -> argparse.ArgumentParser:
    tasks = "\n".join("    " + line for line in textwrap.wrap(", ".join(sorted(available_tasks())), 108))
    p = argparse.ArgumentParser(prog="sapo-vl eval", description="Score benchmarks (official metric, Pass@1, pass@k).",
                                epilog=EPILOG.replace("{tasks}", tasks),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", help="comma-separated task names or YAML paths")
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                   help="import a plug-in module first (repeatable; a dotted name or a .py path)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", help="model directory; completions are generated with sapo_vl.rollout")
    src.add_argument("--samples", help="JSONL of completions generated elsewhere (format below)")
    p.add_argument("--output-dir", help="where outputs go (default: eval_results/<model or samples name>)")
    p.add_argument("--limit", type=int, help="evaluate only the first N docs of each task")
    p.add_argument("--data-path", type=_data_path, action="append", default=[], metavar="TASK=PATH",
                   help="local data of a task (file or directory); repeatable")
    g = p.add_argument_group("generation (override the task files)")
    g.add_argument("--n", type=int, help="completions per doc")
    g.add_argument("--k", type=_int_list, help="pass@k values, e.g. 1,2,4 (only k <= n are reported)")
    g.add_argument("--temperature", type=float)
    g.add_argument("--top-p", type=float)
    g.add_argument("--top-k", type=int)
    g.add_argument("--max-new-tokens", type=int)
    g.add_argument("--min-pixels", type=int)
    g.add_argument("--max-pixels", type=int)
    g.add_argument("--seed", type=int)
    g.add_argument("--batch-size", type=int, default=8, help="docs per generation call (default 8)")
    g.add_argument("--dtype", default="auto", help="model dtype (auto, bfloat16, float32, ...)")
    g.add_argument("--device", help="model device (default: cuda if available, else cpu)")
    p.add_argument("--overwrite", action="store_true", help="discard earlier per-sample logs in --output-dir")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--list-tasks", action="store_true", help="list the task names that resolve, and exit")
    p.add_argument("--write-prompts", metavar="FILE", help="write each doc's prompt to FILE (JSONL) and exit")
    return p


def _list_tasks() -> int:
    for name, loader in sorted(available_tasks().items()):
        print(f"{name:<24} {task_file(loader) or '(registered by a plug-in)'}")
    return 0


def _default_output_dir(args: argparse.Namespace) -> str:
    source = Path(args.model or args.samples)
    return str(Path("eval_results") / sanitize_model_name(source.name or str(source)))


def _config(args: argparse.Namespace):
    return EvalConfig(
        tasks=[t.strip() for t in args.tasks.split(",") if t.strip()],
        output_dir=args.output_dir or _default_output_dir(args), model=args.model, samples=args.samples,
        limit=args.limit, n=args.n, k=args.k, temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
        max_new_tokens=args.max_new_tokens, min_pixels=args.min_pixels, max_pixels=args.max_pixels,
        seed=args.seed, batch_size=args.batch_size, dtype=args.dtype, device=args.device,
        data_paths=dict(args.data_path), overwrite=args.overwrite, progress=not args.no_progress,
    )


def main(argv: list[str] | None = None) -> int:
    argv, imports = split_imports(sys.argv[1:] if argv is None else argv)
    try:  # before the parser is built: --help lists the plug-ins' tasks too
        load_entry_points()
        import_plugins(imports)
    except UserError as exc:
        print(f"sapo-vl eval: error: {exc}", file=sys.stderr)
        return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list_tasks:
        return _list_tasks()
    if not args.tasks:
        parser.error("--tasks is required")
    try:
        if args.write_prompts:
            count = write_prompts([t for t in args.tasks.split(",") if t.strip()], args.write_prompts,
                                  limit=args.limit, data_paths=dict(args.data_path))
            print(f"wrote {count} prompts to {args.write_prompts}")
            return 0
        if not (args.model or args.samples):
            parser.error("give --model PATH or --samples FILE")

        cfg = _config(args)
        results = run_eval(cfg)
    except (UserError, OSError) as exc:
        print(f"sapo-vl eval: error: {exc}", file=sys.stderr)
        return 2
    print(markdown_table(results), end="")
    print(f"\nresults written to {cfg.output_dir}/results.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
