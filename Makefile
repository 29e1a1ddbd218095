# The README's two commands: `make demo` (the main job) and `make test`.
# Both create .venv on first use. PyTorch's CPU build is installed first, so that the
# plain `torch` requirement is already met and pip never pulls a multi-GB CUDA build.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test test-peers lint bench clean browser

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

demo: $(VENV)/.installed
	$(PY) examples/seed_example.py

test: $(VENV)/.installed browser
	$(PY) -m pytest -q -p no:cacheprovider

# transformers' own common test mixins (its pinned sdist) on torchclip and on transformers, and the diff
test-peers: $(VENV)/.installed
	$(PY) scripts/peer_tests.py --compare

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests benchmarks examples

bench: $(VENV)/.installed
	$(PY) -m torchclip.cli bench

# The browser tests drive Debian's chromium (never a downloaded one): installed here when missing and we are root.
browser:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	elif [ ! -x /usr/bin/chromium ]; then \
		echo "note: /usr/bin/chromium is missing (apt-get install chromium); the browser tests will be skipped"; \
	fi

clean:
	rm -rf $(VENV)
