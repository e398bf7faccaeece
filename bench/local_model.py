"""The embedded local model's speed: cold and cached-prefix calls, concurrent calls, a busy core.

    python bench/local_model.py                        # all figures, this engine
    python bench/local_model.py --engine both --write  # A/B against llama-cpp-python's own path

Each figure is measured in fresh processes (one per engine and measurement, interleaved when
both engines run), on a call of about 350 prompt tokens and 50 answer tokens constrained to a
JSON schema, as DSPy's JSON adapter asks an agent's answer:

- ``cold``: a fresh process loads the model and makes one call (seconds from the process start
  to the answer; the model load alone is shown too);
- ``cached``: the next call of the same agent (same system prompt, another question);
- ``concurrent N``: N calls started at once (N agents), answer tokens per second in total;
- ``busy``: 8 calls one after another while another process keeps one core busy.

``--engine reference`` is llama-cpp-python's ``create_chat_completion`` behind one lock (the local
engine before the batched decoder); ``flock`` is ``flock_cli.engines.local``. The machine's load
(``uptime``) is recorded with the figures: on a shared machine, compare runs made side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "local_model.md"
SYSTEM = (
    "Your input fields are:\n1. `assignment` (StoryAssignment): the angle and brief of a story.\n"
    "Your output fields are:\n1. `article` (Article): Write a short article for the assigned angle.\n"
    "All interactions will be structured in the following way, with the appropriate values filled"
    " in.\n\nInputs will have the following structure:\n\n[[ ## assignment ## ]]\n{assignment}\n\n"
    'Outputs will be a JSON object with the following fields.\n\n{\n  "article": "{article}  '
    '# note: the value you produce must adhere to the JSON schema: {\\"type\\": \\"object\\",'
    ' \\"properties\\": {\\"angle\\": {\\"type\\": \\"string\\", \\"enum\\": [\\"politics\\",'
    ' \\"economy\\", \\"people\\", \\"science\\", \\"history\\", \\"opinion\\", \\"local\\",'
    ' \\"data\\"]}, \\"headline\\": {\\"type\\": \\"string\\", \\"maxLength\\": 100},'
    ' \\"body\\": {\\"type\\": \\"string\\", \\"minLength\\": 40}, \\"word_count\\":'
    ' {\\"type\\": \\"integer\\", \\"minimum\\": 50, \\"maximum\\": 2000}}, \\"required\\":'
    ' [\\"angle\\", \\"headline\\", \\"body\\", \\"word_count\\"]}"\n}\n'
    "In adhering to this structure, your objective is: Write a short article for the assigned"
    " angle. You are journalist of a news agency; write plainly, give facts before opinions, name"
    " your sources when you have them, and keep to the angle you were given. Readers are busy:"
    " the first sentence says what happened, the second why it matters."
)
ANGLES = ["politics", "economy", "people", "science", "history", "opinion", "local", "data"]
SCHEMA = {
    "type": "object",
    "properties": {
        "article": {
            "type": "object",
            "properties": {
                "angle": {"type": "string", "enum": ANGLES},
                "headline": {"type": "string", "maxLength": 100},
                "body": {"type": "string", "minLength": 40},
                "word_count": {"type": "integer", "minimum": 50, "maximum": 2000},
            },
            "required": ["angle", "headline", "body", "word_count"],
        }
    },
    "required": ["article"],
}


def messages(n: int) -> list[dict[str, str]]:
    """The n-th agent's call: the shared system prompt and an assignment of its own."""
    angle = ANGLES[n % len(ANGLES)]
    brief = (
        f"Port strike halts half of the continent's container traffic; story {n}: cover the"
        f" {angle} side for readers in the port cities, with what happens next week."
    )
    user = (
        f'[[ ## assignment ## ]]\n{{"angle": "{angle}", "brief": "{brief}"}}\n\nRespond with a JSON'
        " object in the following order of fields: `article` (must be formatted as a valid Python"
        " Article)."
    )
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


class Engine:
    """One call at a time or many: ``call(n, max_tokens) -> answer tokens``."""

    def __init__(self, kind: str) -> None:
        from flock_cli.engines.local import local_model_path

        self.kind, self.path = kind, local_model_path("local")
        started = time.perf_counter()
        if kind == "reference":
            from llama_cpp import Llama

            self.llama: Any = Llama(
                model_path=str(self.path), n_ctx=4096, n_threads=os.cpu_count() or 2, verbose=False
            )
            self.lock = threading.Lock()
        else:
            from flock_cli.engines.local import _llama

            _llama(self.path)
        self.load_s = time.perf_counter() - started

    def call(self, n: int, max_tokens: int) -> int:
        if self.kind == "reference":
            with self.lock:
                result = self.llama.create_chat_completion(
                    messages=messages(n), temperature=0.0, max_tokens=max_tokens, repeat_penalty=1.1,
                    response_format={"type": "json_object", "schema": SCHEMA},
                )  # fmt: skip
            return int(result["usage"]["completion_tokens"])
        from types import SimpleNamespace as NS

        from flock_cli.engines.local import _LlamaEngine

        sent = messages(n)
        request = NS(
            system=sent[0]["content"],
            messages=[NS(role="user", text=sent[1]["content"])],
            config=NS(temperature=0.0, max_tokens=max_tokens, stop=None, seed=None, top_p=None,
                      response_format={"type": "json_schema", "schema": SCHEMA}),
        )  # fmt: skip
        return int(_LlamaEngine(self.path).complete(request).usage.output_tokens)


def child(kind: str, what: str, tokens: int, count: int) -> dict[str, Any]:
    """One measurement in this (fresh) process."""
    import dspy  # noqa: F401 (a flock has imported it before its first model call: not timed)

    started = time.perf_counter()
    engine = Engine(kind)
    if what == "cold":
        engine.call(0, tokens)
        cold = time.perf_counter() - started
        t = time.perf_counter()
        engine.call(1, tokens)
        return {"load_s": engine.load_s, "cold_s": cold, "cached_s": time.perf_counter() - t}
    engine.call(0, tokens)  # warm: the model loaded, the shared prefix evaluated once
    if what == "concurrent":
        done: list[int] = []
        threads = [
            threading.Thread(target=lambda k=k: done.append(engine.call(k + 1, tokens))) for k in range(count)
        ]
        t = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - t
        return {"seconds": wall, "tokens": sum(done), "tokens_per_s": sum(done) / wall}
    burner = subprocess.Popen([sys.executable, "-c", "while 1: pass"])  # what === "busy"
    try:
        time.sleep(0.5)
        seconds = []
        for k in range(count):
            t = time.perf_counter()
            engine.call(k + 1, tokens)
            seconds.append(time.perf_counter() - t)
    finally:
        burner.kill()
        burner.wait()
    return {"seconds": seconds}


def measure(kind: str, what: str, tokens: int, count: int = 1) -> dict[str, Any]:
    argv = [
        sys.executable,
        __file__,
        "--child",
        what,
        "--engine",
        kind,
        "--tokens",
        str(tokens),
        "--count",
        str(count),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=1800, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"{kind} {what} failed:\n{done.stderr[-2000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def spread(values: list[float]) -> str:
    return f"{min(values):.2f} / {statistics.median(values):.2f} / {max(values):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", choices=["flock", "reference", "both"], default="flock")
    parser.add_argument("--tokens", type=int, default=50, help="answer tokens per call (max_tokens)")
    parser.add_argument("--repeat", type=int, default=2, help="fresh processes per figure")
    parser.add_argument("--concurrency", default="1,2,4,8", help="calls started at once")
    parser.add_argument("--skip", default="", help="figures to leave out: cold,concurrent,busy")
    parser.add_argument("--write", action="store_true", help=f"write markdown to {RESULTS.relative_to(ROOT)}")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.engine, args.child, args.tokens, args.count)))
        return
    kinds = ["flock", "reference"] if args.engine == "both" else [args.engine]
    skip = set(filter(None, args.skip.split(",")))
    load = [os.getloadavg()]
    rows: list[tuple[str, dict[str, str]]] = []
    if "cold" not in skip:
        runs: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
        for round_ in range(args.repeat):
            for kind in kinds[:: 1 if round_ % 2 == 0 else -1]:  # interleaved, each first in turn
                runs[kind].append(measure(kind, "cold", args.tokens))
        for key, label in [("load_s", "model load, s"), ("cold_s", "cold call (fresh process), s"),
                           ("cached_s", "next call, cached prefix, s")]:  # fmt: skip
            rows.append(
                (f"{label} (min / median / max)", {k: spread([r[key] for r in runs[k]]) for k in kinds})
            )
    if "concurrent" not in skip:
        for count in [int(c) for c in args.concurrency.split(",")]:
            found: dict[str, list[float]] = {k: [] for k in kinds}
            for round_ in range(args.repeat):
                for kind in kinds[:: 1 if round_ % 2 == 0 else -1]:
                    found[kind].append(measure(kind, "concurrent", args.tokens, count)["tokens_per_s"])
            rows.append(
                (
                    f"{count} concurrent calls, answer tokens/s in total",
                    {k: f"{max(v):.1f}" for k, v in found.items()},
                )
            )
    if "busy" not in skip:
        for kind in kinds:
            seconds = measure(kind, "busy", args.tokens, 8)["seconds"]
            median = statistics.median(seconds)
            rows.append(("other core busy: 8 calls, s (min / median / max)", {kind: spread(seconds)}))
            rows.append(("other core busy: slowest / median", {kind: f"{max(seconds) / median:.2f}x"}))
    load.append(os.getloadavg())
    merged: dict[str, dict[str, str]] = {}
    for label, values in rows:
        merged.setdefault(label, {}).update(values)
    header = "| figure | " + " | ".join(kinds) + " |\n|---|" + "---:|" * len(kinds)
    lines = [f"| {label} | " + " | ".join(v.get(k, "") for k in kinds) + " |" for label, v in merged.items()]
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    note = (
        f"{when}; {os.cpu_count()} cores; load average (1/5/15 min) before "
        f"{'/'.join(f'{x:.2f}' for x in load[0])}, after {'/'.join(f'{x:.2f}' for x in load[1])};"
        f" {args.tokens} answer tokens a call, best/spread of {args.repeat} fresh processes."
    )
    table = "\n".join([header, *lines])
    print(table + "\n\n" + note)
    if args.write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(
            "# The local model's speed\n\nMade by `python bench/local_model.py --engine both --write`"
            " (bench/local_model.py says what each figure is). `reference` is llama-cpp-python's"
            " create_chat_completion behind one lock, the engine before the batched decoder.\n\n"
            f"{table}\n\n{note}\n"
        )


if __name__ == "__main__":
    main()
