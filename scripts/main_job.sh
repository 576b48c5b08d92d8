#!/usr/bin/env bash
# The main job: set up, train the default model on the built-in data (captions + questions) and easy-VQA,
# evaluate it on the held-out test splits (built-in captions, built-in questions, easy-VQA, and the built-in test
# scenes drawn with renderings training never sees), then caption a held-out scene and ask about it and about an
# easy-VQA image. Arguments go to vlm-train (e.g. --seed 1 --out-dir runs/seed1).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export PATH="$PWD/.venv/bin:$PATH"

run=runs/main
for ((i = 1; i <= $#; i++)); do  # follow --out-dir if one is given
    if [ "${!i}" = "--out-dir" ]; then j=$((i + 1)); run=${!j}; fi
done

SECONDS=0
vlm-train --out-dir "$run" --overwrite "$@"
echo "vlm-train took $((SECONDS / 60)) min $((SECONDS % 60)) s (data loading and validation included)"
for data in shapes shapes_vqa easy_vqa shapes_robust shapes_vqa_robust; do
    vlm-evaluate --checkpoint "$run/model" --data "$data" --split test --out "$run/eval-$data-test"
done

# A held-out scene (the built-in test split's first), rendered afresh with its questions, and an easy-VQA test image.
python data/shapes/prepare.py --out "$run/samples" --splits test --num-images 1 --quiet
image=$(ls "$run"/samples/test/*.png | head -n 1)
vlm-caption --checkpoint "$run/model" "$image"
mapfile -t questions < <(python - "$run/samples/questions_test.json" <<'EOF'
import json, sys
# One question of each kind the scene has: a colour, a count, a relation, then what else there is.
asked = [q["question"] for q in json.load(open(sys.argv[1]))["questions"] if q["image_id"] == 0]
kinds = ("what color", "how many", "is the", "what is", "what shape", "is there")
print("\n".join(next((q for q in asked if q.startswith(kind)), "") for kind in kinds).replace("\n\n", "\n").strip())
EOF
)
args=()
for question in "${questions[@]}"; do [ -n "$question" ] && args+=(--question "$question"); done
vlm-ask --checkpoint "$run/model" --image "$image" "${args[@]}"
easy_vqa_image=$(python -c "import easy_vqa; print(easy_vqa.get_test_image_paths()[0])")
vlm-ask --checkpoint "$run/model" --image "$easy_vqa_image" --question "what shape is in the image?" \
    --question "what color is the shape?" --question "is there a blue shape?" --question "is there a red shape?"
