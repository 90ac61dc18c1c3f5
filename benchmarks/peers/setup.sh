#!/usr/bin/env bash
# One virtual environment per inference server that benchmarks/serving.py compares retain with
# (--peers), and one for Avalanche, the continual-learning library that benchmarks/peers/avalanche_*.py
# run. Their pins clash (PyTriton wants numpy<2, MLServer and KServe pin their own FastAPI,
# pydantic and uvicorn), so each gets its own, under benchmarks/peers/.venvs/<peer> (git-ignored).
# Nothing here is one of retain's dependencies.
#
#   bash benchmarks/peers/setup.sh                   # every peer
#   bash benchmarks/peers/setup.sh torchserve kserve # some
#   bash benchmarks/peers/setup.sh avalanche         # the continual-learning peer only
#
# Everything comes from the package registries by name: PyPI through pip, and Java 17 (TorchServe's
# front end) and wrk (the load generator) from Debian through apt-get when they are missing.
#
# torch: every peer runs the same torch as retain. By default each venv shares the torch of the
# Python that runs retain (TORCH_FROM, default: the repository's .venv, else the python3 on PATH)
# through a .pth file pointing at a folder of links to torch and its CUDA libraries only, so four
# venvs do not unpack four ~5 GB copies. TORCH_FROM=none installs torch==$TORCH_VERSION into each.
#
# avalanche: its scripts import retain's own benchmark code (the same data split and pretrained
# model), so its venv is layered on retain's whole environment instead: a .pth file appends the
# site-packages of TORCH_FROM's Python to the venv's path, and avalanche-lib and the dependencies
# retain lacks (wandb, tensorboard, torchmetrics, qpsolvers, ...) install into the venv itself. pip
# sees retain's packages as installed and never writes outside the venv, so retain's environment is
# unchanged; avalanche-lib pins nothing that retain has at another version. Needs TORCH_FROM.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
VENVS="${PEER_VENVS:-$HERE/.venvs}"
TORCH_VERSION="${TORCH_VERSION:-2.14.1}"
ALL_PEERS=(torchserve pytriton mlserver kserve avalanche)
PEERS=("$@")
[ ${#PEERS[@]} -eq 0 ] && PEERS=("${ALL_PEERS[@]}")

if [ -z "${TORCH_FROM:-}" ]; then
    if [ -x "$REPO/.venv/bin/python" ]; then TORCH_FROM="$REPO/.venv/bin/python"; else TORCH_FROM="$(command -v python3)"; fi
fi
# The peers' venvs use the Python that torch was built for when torch is shared.
if [ "$TORCH_FROM" != none ]; then
    PYTHON="${PYTHON:-$("$TORCH_FROM" -c 'import sys; print(sys.executable)')}"
    TORCH_SITE="$("$TORCH_FROM" -c 'import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))')"
    SHARED_VERSION="$("$TORCH_FROM" -c 'import torch; print(torch.__version__.split("+")[0])')"
    if [ "$SHARED_VERSION" != "$TORCH_VERSION" ]; then
        echo "TORCH_FROM=$TORCH_FROM has torch $SHARED_VERSION, not $TORCH_VERSION" >&2
        exit 1
    fi
    # The base interpreter, not the venv's: a venv made from a venv's python nests oddly.
    PYTHON="$("$PYTHON" -c 'import sys; print(getattr(sys, "_base_executable", sys.executable))')"
else
    PYTHON="${PYTHON:-python3}"
fi

need_apt() {
    if ! command -v "$1" >/dev/null; then
        command -v apt-get >/dev/null || { echo "$1 is missing and there is no apt-get: install $2" >&2; exit 1; }
        apt-get install -y "$2" >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y "$2" >/dev/null; }
    fi
}
for peer in "${PEERS[@]}"; do  # the load generator, for the inference servers only
    [ "$peer" != avalanche ] && { need_apt wrk wrk; break; }
done

shared_torch() {
    # A folder of links to torch and the libraries its wheel loads (CUDA, triton), added at the end of
    # the venv's path: the venv's own packages (numpy, typing-extensions, ...) come first.
    local venv="$1" links="$VENVS/.shared-torch"
    if [ ! -d "$links" ]; then
        mkdir -p "$links.tmp"
        for entry in "$TORCH_SITE"/{torch,torchgen,functorch,nvidia,cuda,triton,torch-*.dist-info,nvidia_*.dist-info,cuda_*.dist-info,triton-*.dist-info}; do
            [ -e "$entry" ] && ln -s "$entry" "$links.tmp/"
        done
        mv "$links.tmp" "$links"
    fi
    "$venv/bin/python" -c 'import site, sys; print(site.getsitepackages()[0])' | {
        read -r site_dir
        echo "$links" > "$site_dir/zz-shared-torch.pth"
    }
    # torch's pure-Python requirements, at the venv's own (compatible) versions.
    "$venv/bin/pip" install -q "sympy>=1.13.3" networkx jinja2 fsspec filelock "typing-extensions>=4.10" setuptools
}

layer_on_retain() {
    # Retain's site-packages at the end of the venv's path: the venv's own packages come first.
    local venv="$1"
    "$venv/bin/python" -c 'import site; print(site.getsitepackages()[0])' | {
        read -r site_dir
        echo "$TORCH_SITE" > "$site_dir/zz-retain-site.pth"
    }
}

make_venv() {
    local peer="$1"; shift
    local venv="$VENVS/$peer"
    echo "== $peer: $venv"
    rm -rf "$venv"
    "$PYTHON" -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip
    if [ "$peer" = avalanche ]; then
        [ "$TORCH_FROM" = none ] && { echo "avalanche needs retain's environment: unset TORCH_FROM" >&2; exit 1; }
        layer_on_retain "$venv"
    elif [ "$TORCH_FROM" = none ]; then
        "$venv/bin/pip" install -q "torch==$TORCH_VERSION"
    else
        shared_torch "$venv"
    fi
    "$venv/bin/pip" install -q "$@"
    "$venv/bin/python" -c "import torch; torch.set_num_threads(1); print('torch', torch.__version__, torch.nn.Linear(2, 1)(torch.ones(1, 2)).shape)"
}

for peer in "${PEERS[@]}"; do
    case "$peer" in
        torchserve)
            need_apt java openjdk-17-jre-headless
            make_venv torchserve torchserve torch-model-archiver pyyaml safetensors "numpy<3"
            ;;
        pytriton)
            make_venv pytriton nvidia-pytriton "numpy<2" safetensors
            ;;
        mlserver)
            # uvloop 0.22 made asyncio.get_event_loop() outside a running loop an error, which MLServer
            # 1.7.1's inference pool workers call at start (RuntimeError: There is no current event loop).
            make_venv mlserver mlserver safetensors "uvloop<0.22"
            ;;
        kserve)
            make_venv kserve kserve safetensors
            ;;
        avalanche)
            make_venv avalanche avalanche-lib
            PYTHONPATH="$REPO" "$VENVS/avalanche/bin/python" -c \
                "import avalanche, app.learning, transformers; print('avalanche', avalanche.__version__)"
            ;;
        *)
            echo "unknown peer $peer (known: ${ALL_PEERS[*]})" >&2
            exit 1
            ;;
    esac
done
for peer in "${PEERS[@]}"; do
    "$VENVS/$peer/bin/pip" freeze | grep -i -E "^(torchserve|torch-model-archiver|nvidia-pytriton|mlserver|kserve|avalanche-lib|numpy)=" | sed "s/^/$peer: /" || true
done
