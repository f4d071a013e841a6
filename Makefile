# Two entry points for a fresh machine:  make app   |   make test
# Both create .venv when it is missing and install what is needed (torch first, CPU build).
VENV   ?= .venv
PYTHON ?= python3
PY      = $(VENV)/bin/python
# torch is installed first and on its own so that pip never resolves a multi-GB CUDA build.
# On a machine without a local CPU wheel, add PyTorch's CPU-only index via TORCH_PIP_ARGS.
TORCH_SPEC     ?= torch==2.13.0
TORCH_PIP_ARGS ?=
EXTRAS ?= dev
STAMP   = $(VENV)/.installed-$(EXTRAS)

.PHONY: app test lint install bench clean notebooks

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	$(PY) -c "import torch, anysat_core; print('torch', torch.__version__, '| anysat_core', anysat_core.__version__)"
	touch $@

install: $(STAMP)

# Every test but those that need the network or a GPU (the plain `pytest` inner loop leaves out slow and system too),
# in TEST_WORKERS pytest-xdist processes of one thread each (tests/conftest.py sets the threads). The tests' temporary
# files go to memory (/dev/shm) where there is one: the suite writes many small rasters and stores.
TEST_WORKERS ?= 2
TEST_TMP ?= $(if $(wildcard /dev/shm),/dev/shm/anysat-explorer-tests,)
# The browser tests drive Debian's chromium with Playwright (never `playwright install`): installed with apt when missing.
CHROMIUM ?= /usr/bin/chromium
$(CHROMIUM):
	if command -v apt-get >/dev/null; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; \
	else echo "install chromium (the browser tests look for $(CHROMIUM) or CHROMIUM_PATH)"; fi

# The tutorials in notebooks/ run top to bottom too (nbmake: each notebook is one test item; small settings).
test: install $(CHROMIUM)
	$(PY) -m pytest -q -n $(TEST_WORKERS) -m 'not network and not gpu' $(if $(TEST_TMP),--basetemp=$(TEST_TMP)) \
	  tests notebooks --nbmake --nbmake-timeout=900

# Static checks, as CI runs them: ruff lint, ruff format, mypy (lenient on anysat_core, see pyproject.toml).
lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

# The explorer on the embedded default (GeoPlex-mini + the shipped checkpoint), on http://127.0.0.1:$(APP_PORT)/app
# (loopback only). Data roots: APP_ARGS="--data-root DIR" or ANYSAT_DATA_ROOTS.
APP_PORT ?= 5006
APP_ARGS ?=
app: install
	@echo "AnySat Explorer: open http://127.0.0.1:$(APP_PORT)/app (Ctrl-C stops it)"
	$(VENV)/bin/panel serve app --address 127.0.0.1 --port $(APP_PORT) --allow-websocket-origin 127.0.0.1:$(APP_PORT) \
	  --allow-websocket-origin localhost:$(APP_PORT) $(if $(APP_ARGS),--args $(APP_ARGS))

# The tutorials in JupyterLab (leafmap maps render offline there; basemap tiles only with internet).
NB_PORT ?= 8888
notebooks: install
	$(VENV)/bin/jupyter lab notebooks --ip 127.0.0.1 --port $(NB_PORT) --no-browser

bench: install
	$(PY) tests/benchmarks/bench_inference.py
	$(PY) tests/benchmarks/bench_scene.py
	$(PY) tests/benchmarks/bench_scene_memory.py --check

clean:
	rm -rf $(VENV) .pytest_cache
