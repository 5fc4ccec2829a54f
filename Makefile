# The two commands of a fresh machine (see README.md):
#   make demo   install everything, then run the whole pipeline end to end
#   make test   install everything, then run every test (CI runs this)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DEMO_ARGS ?=
# Test processes (pytest-xdist). Most of the suite's wall time is waiting (visibility
# timeouts, worker start-ups, Redis restarts), so two processes on two cores overlap
# one test's waits with another's work; `--dist loadfile` keeps each file in one
# process, so module fixtures are built once. TEST_PROCS=0 runs serially.
TEST_PROCS ?= 2

.PHONY: install browser demo test lint format bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

# librosa is the tests' and benchmarks' reference (workers do not import it). It compiles
# its numba kernels on first use, ~20 s of CPU, into its package's cache: compiled once
# here, not in each test process of a fresh venv at the same time.
$(VENV)/.librosa-compiled: $(VENV)/.installed
	$(BIN)/python -c "import librosa; librosa.load, librosa.power_to_db, librosa.feature.melspectrogram, librosa.feature.delta"
	touch $@

# Headless Chromium renders the HTML report in tests/test_run_outputs.py (those checks
# skip without it). Installed with apt where this runs as root; elsewhere install it yourself.
browser:
	@command -v chromium >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || \
		{ apt-get update -qq && apt-get install -y -qq chromium; } >/dev/null 2>&1 || \
		echo "chromium not installed: the HTML rendering test will be skipped"

demo: install
	$(BIN)/orchestrator run $(DEMO_ARGS)

test: install browser $(VENV)/.librosa-compiled
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -ra --durations=25 -n $(TEST_PROCS) --dist loadfile

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
