# Two entry points: `make serve` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: serve test lint ship-check image image-check install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,lint,train,ship]"
	touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	$(BIN)/facedemo serve

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src train tests bench deploy
	$(BIN)/ruff format --check src train tests bench deploy
	$(BIN)/mypy

# Offline checks of the shipping files (kubernetes-validate's schemas ship in its wheel). The
# Kubernetes minors are pinned so that a newer validator cannot silently change the verdict.
ship-check: $(STAMP)
	$(BIN)/hadolint Dockerfile
	for version in 1.35.0 1.37.0; do \
		$(BIN)/kubernetes-validate --strict --kubernetes-version $$version deploy/k8s/*.yaml || exit 1; \
	done

# Both images: Docker where an engine answers, else buildah with a debootstrapped stand-in for
# python:3.12-slim (deploy/build-image.sh; docs/deploy.md), then a smoke test of both.
IMAGE_TARGETS ?= cpu gpu

image:
	for target in $(IMAGE_TARGETS); do deploy/build-image.sh $$target || exit 1; done

image-check: image $(STAMP)
	$(BIN)/python deploy/image_check.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
