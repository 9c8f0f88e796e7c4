# Two commands set everything up on a fresh machine with Python 3.10+:
#   make test        a virtual environment in .venv with the locked versions, then ruff and the test suite
#   make quickstart  the same environment, then the main job end to end (CPU is enough: about two minutes)
# Also: make test-latest (the suite against the newest releases, in .venv-latest) and make lock.

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
# pip's default torch is the CUDA build. Without an NVIDIA GPU, point this at a CPU wheel index
# (https://download.pytorch.org/whl/cpu) unless your pip already finds a CPU build, as ours does.
TORCH_INDEX ?=
TORCH_INSTALL = $(TORCH) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
CONSTRAINTS ?= -c constraints.txt

.PHONY: test quickstart test-latest lock

# torch first: installing the project alone would let pip pick torch, and it picks the multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -c "import torch" 2>/dev/null || $(VENV)/bin/pip install -q $(TORCH_INSTALL)
	$(VENV)/bin/pip install -q $(CONSTRAINTS) -e ".[dev]"
	touch $@

test: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest -q

quickstart: $(VENV)/.installed
	$(VENV)/bin/python prepare_data.py --dataset text \
		--data_files "$$($(VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')/*.py" \
		--train_tokenizer_vocab 2048 --block_size 128 --output_dir outputs/quickstart/data
	$(VENV)/bin/python run_pretrain.py configs/quickstart.yaml

# The newest releases of everything the project declares, ignoring the lock: how to check a new transformers.
test-latest:
	rm -f .venv-latest/.installed
	$(MAKE) test VENV=.venv-latest CONSTRAINTS=--upgrade
	.venv-latest/bin/pip list 2>/dev/null | grep -iE '^(torch|transformers|accelerate|datasets|tokenizers|lm.eval) '

# After a green `make test-latest`: record its versions as the new lock.
lock:
	{ sed -n '1,2p' constraints.txt; .venv-latest/bin/pip freeze --exclude-editable | grep -v -iE '^(torch|gpt2-scratch)=='; } \
		> constraints.txt.new && mv constraints.txt.new constraints.txt
