# Set-up and everyday targets. Every target creates .venv when missing.
PY := .venv/bin/python
STAMP := .venv/.demoset-installed
export MUJOCO_GL ?= osmesa
export PYOPENGL_PLATFORM ?= osmesa

.PHONY: setup demo test lint fuzz bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $(STAMP)

demo: $(STAMP)
	bash scripts/demo.sh

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadgroup -m "not slow" tests

lint: $(STAMP)
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

fuzz: $(STAMP)
	DEMOSET_FUZZ_CASES=5000 $(PY) -m pytest -q -m slow tests/format/test_fuzz.py

bench: $(STAMP)
	$(PY) benchmarks/loader.py

clean:
	rm -rf .venv build dist demo_out
