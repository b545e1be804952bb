#!/usr/bin/env bash
# The one prepared check to run when a session is lent a CUDA GPU (docs/performance.md,
# "When a GPU is lent"). From the repository root:
#
#   bash benchmarks/gpu_check.sh --fetch-wheels   # here, once, with network: wheels -> .whl/
#   bash benchmarks/gpu_check.sh                  # on the GPU machine (device tool, carry .whl)
#
# Three steps, each under its own timeout and all under GPU_CHECK_BUDGET seconds (default
# 450, so the whole run ends well inside 8 minutes):
#   tests       pytest of every test file with CUDA-only tests: `-m gpu`, then the rest of them
#   throughput  benchmarks/engine_throughput.py on torch-cuda (fp16, bf16; lite, paper; 512²,
#               2048²; whole frame and 64-px tiles), frames/s and fraction of peak (MFU)
#   parity      benchmarks/precision_parity.py: fp16/bf16 vs fp32 PSNR (target within 0.1 dB)
# Each step writes its own JSON; the summary is $RESULTS/gpu_check-<device-slug>.json, copied
# with the step JSONs and the log to $OUT when OUT is set. Without a CUDA device every step is
# recorded as {"status": "skipped", "skipped": "no CUDA device: ..."}; a step that runs out
# of time is "timed_out" and the next one still runs. The script always exits 0.
#
# Environment: GPU_CHECK_RESULTS (default benchmarks/results), GPU_CHECK_BUDGET (seconds).
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
RESULTS=${GPU_CHECK_RESULTS:-benchmarks/results}
BUDGET=${GPU_CHECK_BUDGET:-450}
WHEELS=.whl
SITE=/tmp/sn2n-live-site
DEADLINE=$((SECONDS + BUDGET))
WORK=$(mktemp -d)
LOG=$WORK/gpu_check.log
export PYTHONUNBUFFERED=1 QT_QPA_PLATFORM=offscreen

# The device machine reaches no package registry, but its image's python3 already holds a
# CUDA torch, numpy, scipy, onnx(runtime), rich, matplotlib, scikit-image and pytest; what
# sn2n_live.engine/method/simulation still need is pydantic and its dependencies. Fetch
# those wheels here, at the versions this project's .venv runs, and carry `.whl` there.
if [[ ${1:-} == --fetch-wheels ]]; then
    pins=$(.venv/bin/python -c 'from importlib.metadata import version as v
print(*(f"{n}=={v(n)}" for n in ("pydantic", "pydantic-core", "annotated-types",
      "typing-inspection", "typing-extensions")))') || exit 1
    grep -qsx "/$WHEELS/" .git/info/exclude || echo "/$WHEELS/" >>.git/info/exclude
    # shellcheck disable=SC2086 # one argument per pin
    .venv/bin/python -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform manylinux_2_28_x86_64 -d "$WHEELS" $pins || exit 1
    ls -l "$WHEELS"
    exit 0
fi

log() { echo "[gpu_check $((SECONDS))s] $*" | tee -a "$LOG"; }
remaining() { echo $((DEADLINE - SECONDS)); }
# Nominal step timeout, cut to what is left of the overall budget (10 s kept for the summary).
step_timeout() {
    local left=$(($(remaining) - 10))
    echo $(($1 < left ? $1 : left))
}

# -- the Python environment --------------------------------------------------------------------
# First that works: .venv (where it has CUDA, or where there is no GPU at all); the image's
# python3 with CUDA torch plus the carried wheels (the device machine); else `make install`.
# On a GPU machine that install drops the constraints.txt pin (torch==2.13.0, which resolves
# to this project's CPU build) so pip picks its default CUDA torch: `make CONSTRAINTS=
# install`. It needs a registry and several GB of CUDA wheels, so it is bounded by timeout.
HAS_SMI=0
command -v nvidia-smi >/dev/null 2>&1 && HAS_SMI=1
cuda_python() { "$1" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' 2>/dev/null; }
project_python() { "$1" -c 'import sn2n_live.engine, sn2n_live.simulation' 2>/dev/null; }

PY=""
ENV_NOTE=""
STEP_START=$SECONDS
STEP_LIMIT=0
RC=0
if [[ -x .venv/bin/python ]] && { ((!HAS_SMI)) || cuda_python .venv/bin/python; }; then
    PY=.venv/bin/python
    ENV_NOTE=".venv"
fi
if [[ -z $PY ]] && ((HAS_SMI)) && command -v python3 >/dev/null && cuda_python python3; then
    if compgen -G "$WHEELS/*.whl" >/dev/null; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$SITE" "$WHEELS"/*.whl 2>&1 | tee -a "$LOG"
    fi
    export PYTHONPATH="$PWD/src:$SITE${PYTHONPATH:+:$PYTHONPATH}"
    if project_python python3; then
        PY=python3
        ENV_NOTE="image python3 ($(command -v python3)) + src on PYTHONPATH + $WHEELS wheels"
    else
        log "python3 has CUDA torch but cannot import sn2n_live (carry $WHEELS? see --fetch-wheels)"
    fi
fi
if [[ -z $PY ]]; then
    constraints=()
    ((HAS_SMI)) && constraints=(CONSTRAINTS=)
    limit=$(step_timeout 240)
    log "make ${constraints[*]} install (timeout ${limit}s)"
    timeout -k 10 "$limit" make "${constraints[@]}" install 2>&1 | tee -a "$LOG"
    rc=${PIPESTATUS[0]}
    if [[ -x .venv/bin/python ]] && project_python .venv/bin/python; then
        PY=.venv/bin/python
        ENV_NOTE=".venv from make ${constraints[*]} install"
    else
        ENV_NOTE="make ${constraints[*]} install failed (rc $rc)"
    fi
fi
# Writing the JSON needs some Python even when no environment could be set up.
JSONPY=${PY:-python3}
log "python: ${PY:-none} ($ENV_NOTE)"

# -- the device ---------------------------------------------------------------------------------
NO_CUDA=""
GPU_NAME=""
if ((HAS_SMI)); then
    GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)
fi
if [[ -z $PY ]]; then
    NO_CUDA="no Python environment: $ENV_NOTE"
elif ((!HAS_SMI)); then
    NO_CUDA="no CUDA device: nvidia-smi not found"
elif ! cuda_python "$PY"; then
    NO_CUDA="no CUDA device: $("$PY" -c 'import torch; print(f"torch {torch.__version__}")' \
        2>&1 | tail -n 1) reports torch.cuda.is_available() False"
fi
if [[ -z $GPU_NAME && -z $NO_CUDA ]]; then
    GPU_NAME=$("$PY" -c 'import torch; print(torch.cuda.get_device_name(0))')
fi
DEVICE_SLUG=$(echo "${GPU_NAME:-no-cuda}" | tr '[:upper:]' '[:lower:]' |
    sed -E 's/[^a-z0-9]+/-/g; s/^-+|-+$//g')
mkdir -p "$RESULTS"
TESTS_JSON=$RESULTS/gpu_tests-$DEVICE_SLUG.json
THROUGHPUT_JSON=$RESULTS/engine_throughput-$DEVICE_SLUG.json
PARITY_JSON=$RESULTS/precision_parity-$DEVICE_SLUG.json
SUMMARY_JSON=$RESULTS/gpu_check-$DEVICE_SLUG.json
log "device: ${GPU_NAME:-none} (${NO_CUDA:-CUDA available}); results in $RESULTS"

# record STEP KEY=VALUE...: one JSON object per step in $WORK/STEP.json (values that parse as
# JSON are kept as such, others as strings).
record() {
    local step=$1
    shift
    "$JSONPY" - "$WORK/$step.json" "$@" <<'EOF'
import json, sys

out, *pairs = sys.argv[1:]
entry = {}
for pair in pairs:
    key, _, value = pair.partition("=")
    try:
        entry[key] = json.loads(value)
    except ValueError:
        entry[key] = value
with open(out, "w") as f:
    json.dump(entry, f, indent=2)
EOF
}

# run_step STEP NOMINAL_TIMEOUT CMD...: the command under timeout, output to the log; sets RC.
run_step() {
    local step=$1 limit
    limit=$(step_timeout "$2")
    shift 2
    STEP_START=$SECONDS
    STEP_LIMIT=$limit
    if ((limit < 15)); then
        RC=-1
        return
    fi
    log "$step: $* (timeout ${limit}s)"
    timeout -k 10 "$limit" "$@" 2>&1 | tee -a "$LOG"
    RC=${PIPESTATUS[0]}
}

# finish STEP JSON [KEY=VALUE...]: record the step's outcome from RC.
finish() {
    local step=$1 json=$2
    shift 2
    local status=ok
    if ((RC == -1)); then
        record "$step" status=skipped skipped="overall budget of ${BUDGET}s spent" "$@"
        return
    fi
    ((RC == 124 || RC == 137)) && status=timed_out
    ((RC != 0 && RC != 124 && RC != 137)) && status=failed
    record "$step" status=$status rc=$RC seconds=$((SECONDS - STEP_START)) \
        timeout_s="$STEP_LIMIT" json="$json" "$@"
    log "$step: $status (rc $RC)"
}

skip_all() {
    for step in tests throughput parity; do
        record "$step" status=skipped skipped="$NO_CUDA"
        log "$step: skipped: $NO_CUDA"
    done
}

# -- a. GPU tests --------------------------------------------------------------------------------
step_tests() {
    local files
    mapfile -t files < <(grep -lE 'mark\.gpu|cuda\.is_available\(\)' tests/test_*.py)
    if ((${#files[@]} == 0)); then
        record tests status=skipped skipped="no test file has CUDA tests"
        return
    fi
    local noconftest=()
    # tests/conftest.py imports pymmcore_plus for the live-hook fixtures; the CUDA test files
    # use none of them, so where it is missing (the device image) run without conftest.
    "$PY" -c 'import pymmcore_plus' 2>/dev/null || noconftest=(--noconftest)
    run_step tests 90 "$PY" -m pytest -q -rs -p no:cacheprovider "${noconftest[@]}" -m gpu \
        --junitxml="$WORK/gpu.xml" "${files[@]}"
    local rc_gpu=$RC start=$STEP_START limit=$STEP_LIMIT
    # The rest of those files: CPU tests whose expectations change when CUDA is present.
    run_step tests 50 "$PY" -m pytest -q -rs -p no:cacheprovider "${noconftest[@]}" -m "not gpu" \
        --junitxml="$WORK/rest.xml" "${files[@]}"
    local rc_rest=$RC
    "$JSONPY" - "$TESTS_JSON" "$WORK/gpu.xml" "$WORK/rest.xml" "$rc_gpu" "$rc_rest" \
        "${noconftest[*]}" "${files[@]}" <<'EOF'
import json, sys, xml.etree.ElementTree as ET

out, gpu_xml, rest_xml, rc_gpu, rc_rest, noconftest, *files = sys.argv[1:]


def counts(path: str, rc: int) -> dict:
    if rc == -1:
        return {"status": "skipped", "skipped": "overall budget spent"}
    status = {0: "ok", 5: "ok", 124: "timed_out", 137: "timed_out"}.get(rc, "failed")
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        return {"status": status, "rc": rc, "error": f"no junit xml: {exc}"}
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    total = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    failed, skipped = [], []
    for case in root.iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        for tag in ("failure", "error"):
            if case.find(tag) is not None:
                failed.append(name)
        skip = case.find("skipped")
        if skip is not None:
            skipped.append(f"{name}: {skip.get('message', '')}")
    return {
        "status": status,
        "rc": rc,
        "passed": total["tests"] - total["failures"] - total["errors"] - total["skipped"],
        "failed": total["failures"] + total["errors"],
        "skipped": total["skipped"],
        "failed_tests": failed,
        "skipped_tests": skipped,
    }


report = {
    "files": files,
    "noconftest": bool(noconftest),
    "gpu": counts(gpu_xml, int(rc_gpu)),
    "not_gpu": counts(rest_xml, int(rc_rest)),
}
with open(out, "w") as f:
    json.dump(report, f, indent=2)
EOF
    # The step's own status: the worse of the two runs (pytest's 5 = nothing collected).
    RC=$rc_gpu
    ((RC == 0 || RC == 5)) && RC=$rc_rest
    ((RC == 5)) && RC=0
    STEP_START=$start
    STEP_LIMIT=$((limit + STEP_LIMIT))
    finish tests "$TESTS_JSON"
}

# -- b. engine throughput ------------------------------------------------------------------------
step_throughput() {
    # 16 configurations, each one warm-up frame plus at most 5 timed frames or 3 s.
    run_step throughput 150 "$PY" benchmarks/engine_throughput.py --backends torch-cuda \
        --precisions fp16 bf16 --presets lite paper --sizes 512 2048 --tilings whole 64 \
        --repeats 5 --max-seconds 3 --no-loop-comparison --out "$THROUGHPUT_JSON"
    finish throughput "$THROUGHPUT_JSON"
}

# -- c. fp16/bf16 vs fp32 fidelity ---------------------------------------------------------------
step_parity() {
    # 1 min of training plus simulation and four inference passes over nine 256² frames.
    run_step parity 140 "$PY" benchmarks/precision_parity.py --minutes 1.0 --out "$PARITY_JSON"
    finish parity "$PARITY_JSON"
}

if [[ -n $NO_CUDA ]]; then
    skip_all
else
    step_tests
    step_throughput
    step_parity
fi

# -- summary -------------------------------------------------------------------------------------
"$JSONPY" - "$SUMMARY_JSON" "$WORK" "${GPU_NAME:-}" "$DEVICE_SLUG" "${PY:-}" "$ENV_NOTE" \
    "$BUDGET" "$SECONDS" <<'EOF'
import json, subprocess, sys, time
from pathlib import Path

out, work, gpu, device_slug, py, env_note, budget, wall = sys.argv[1:]
work = Path(work)


def load(path: str) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def torch_version() -> str | None:
    if not py:
        return None
    done = subprocess.run(
        [py, "-c", "import torch; print(torch.__version__, 'CUDA', torch.version.cuda)"],
        capture_output=True, text=True,
    )
    return done.stdout.strip() or None


steps = {name: load(work / f"{name}.json") for name in ("tests", "throughput", "parity")}
# Fold the headline numbers of each step's own JSON into the summary.
if steps["tests"].get("json"):
    tests = load(steps["tests"]["json"])
    for kind in ("gpu", "not_gpu"):
        if kind in tests:
            steps["tests"][kind] = {
                k: tests[kind].get(k) for k in ("status", "passed", "failed", "skipped", "failed_tests")
            }
if steps["throughput"].get("json"):
    rows = load(steps["throughput"]["json"]).get("results", [])
    keys = ("preset", "size", "tiling", "precision", "fps", "latency_p50_ms",
            "tflops_achieved", "fraction_of_peak", "skipped")
    steps["throughput"]["rows"] = [{k: r[k] for k in keys if k in r} for r in rows]
if steps["parity"].get("json"):
    parity = load(steps["parity"]["json"])
    steps["parity"]["pass"] = parity.get("pass")
    steps["parity"]["target_db"] = parity.get("target_db")
    steps["parity"]["results"] = {
        name: {k: v for k, v in row.items() if k != "psnr_per_frame"}
        for name, row in parity.get("results", {}).items()
    }
summary = {
    "device": gpu or None,
    "device_slug": device_slug,
    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    "python": py or None,
    "environment": env_note,
    "torch": torch_version(),
    "budget_s": int(budget),
    "wall_s": int(wall),
    "steps": steps,
}
Path(out).write_text(json.dumps(summary, indent=2))
print(json.dumps({k: v.get("status") for k, v in steps.items()}))
EOF
log "wrote $SUMMARY_JSON"
cp "$LOG" "$RESULTS/gpu_check-$DEVICE_SLUG.log"

if [[ -n ${OUT:-} ]]; then
    mkdir -p "$OUT"
    for f in "$SUMMARY_JSON" "$TESTS_JSON" "$THROUGHPUT_JSON" "${THROUGHPUT_JSON%.json}.png" \
        "$PARITY_JSON"; do
        [[ -f $f ]] && cp "$f" "$OUT/"
    done
    cp "$LOG" "$OUT/gpu_check-$DEVICE_SLUG.log"
    log "copied results to $OUT"
fi
rm -rf "$WORK"
exit 0
