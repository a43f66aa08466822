#!/usr/bin/env bash
# Put Fashion-MNIST's four IDX .gz files (real garment photographs, 28x28 grey, 60,000 + 10,000, the MNIST
# format and file names) into OUT_DIR, for `trainer bench OUT_DIR --mnist-digits 0-9`.
# Source, in order: the Debian/Ubuntu package dataset-fashion-mnist (apt's cache, or an installed copy),
# else it says where to download them. Usage: scripts/fashion_mnist_idx.sh OUT_DIR
set -euo pipefail
out=${1:?usage: scripts/fashion_mnist_idx.sh OUT_DIR}
files=(train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz)
mkdir -p "$out"
installed=/usr/share/datasets/fashion-mnist
if [ -f "$installed/${files[0]}" ]; then
  src=$installed
else
  deb=$(ls /var/cache/apt/archives/dataset-fashion-mnist_*.deb 2>/dev/null | head -1 || true)
  if [ -z "$deb" ]; then
    echo "no Fashion-MNIST here: install the package (apt-get install dataset-fashion-mnist) or download the" >&2
    echo "four files ${files[*]} from https://github.com/zalandoresearch/fashion-mnist into $out" >&2
    exit 1
  fi
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  dpkg-deb -x "$deb" "$tmp"
  src=$tmp$installed
fi
for f in "${files[@]}"; do cp "$src/$f" "$out/$f"; done
echo "wrote Fashion-MNIST (${files[*]}) to $out"
