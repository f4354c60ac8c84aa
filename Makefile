# Convenience targets; the README's two commands are scripts/run-site and scripts/run-tests.
.PHONY: setup run dev test test-fast lint fmt bench bench-quick clean

setup:        ## install Python deps, npm assets, migrate
	./scripts/setup.sh
run:          ## serve on http://127.0.0.1:8000 (Daphne)
	./scripts/run-site
dev: setup    ## Django's runserver (Daphne, auto-reload)
	.venv/bin/python manage.py runserver 127.0.0.1:8000
test:         ## the whole suite (lint + unit + integration + Chromium e2e)
	./scripts/run-tests
test-fast: setup  ## everything but the browser tests
	.venv/bin/python -m pytest -m "not e2e"
lint: setup
	.venv/bin/ruff check . && .venv/bin/ruff format --check .
fmt: setup
	.venv/bin/ruff check --fix . && .venv/bin/ruff format .
bench: setup  ## all benchmarks; figures in bench/results/*.json
	.venv/bin/python -m bench
bench-quick: setup
	.venv/bin/python -m bench --quick
clean:
	rm -rf .venv node_modules static/vendor staticfiles .pytest_cache .ruff_cache
