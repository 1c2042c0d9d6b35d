#!/usr/bin/env bash
# Installs everything surgeon needs to build, test and benchmark on Debian 12 (run as root, or
# with sudo available). Used by the README's commands and by .ci/run.
set -euo pipefail
packages=(
  build-essential cmake ninja-build git
  libeigen3-dev libfmt-dev catch2 libbenchmark-dev   # the library, its tests and benchmarks
  nlohmann-json3-dev                                  # JSON read and written (safetensors headers, reports)
  libcli11-dev                                        # the tools' command-line flags
  libopenblas-dev liblapacke-dev                      # the CPU backend's default dense kernels
  clang-format                                        # the formatting check
  doxygen                                             # the API reference (docs/Doxyfile)
  python3-torch python3-numpy time                    # the PyTorch reference of the Llama tests
  gnuplot-nox                                         # the plot of benchmarks/compare_methods.sh
  python3-pip curl                                    # the fetch scripts (pip download, PyPI files)
  openmpi-bin libopenmpi-dev                          # runs over several processes (mpirun, surgeon::mpi)
)
sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
echo "install-deps: ${packages[*]} installed"
