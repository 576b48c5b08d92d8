#!/usr/bin/env bash
# The main job: set up, train the default model on the built-in data (captions + questions) and easy-VQA,
# evaluate it on the held-out test splits, then caption a held-out image and answer a question about another.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export PATH="$PWD/.venv/bin:$PATH"

SECONDS=0
vlm-train --out-dir runs/main --overwrite "$@"
echo "vlm-train took $((SECONDS / 60)) min $((SECONDS % 60)) s (data loading and validation included)"
vlm-evaluate --checkpoint runs/main/model --data shapes --split test --out runs/main/eval-shapes-test
vlm-evaluate --checkpoint runs/main/model --data easy_vqa --split test --out runs/main/eval-easy_vqa-test

# Held-out images: a freshly rendered built-in test scene, and an easy-VQA test image.
python data/shapes/prepare.py --out runs/main/samples --splits test --num-images 1 --quiet
image=$(ls runs/main/samples/test/*.png | head -n 1)
vlm-caption "$image"
easy_vqa_image=$(python -c "import easy_vqa; print(easy_vqa.get_test_image_paths()[0])")
vlm-ask --image "$easy_vqa_image" --question "what shape is in the image?" --question "what color is the shape?" \
    --question "is there a blue shape?" --question "is there a red shape?"
