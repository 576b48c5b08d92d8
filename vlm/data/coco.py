"""Caption data sets in the two formats users bring: COCO's `captions_*.json` and Karpathy's split files
(`dataset_coco.json`, `dataset_flickr8k.json`, `dataset_flickr30k.json`). See data/coco/README.md for downloads.

mode="train" yields one Sample per (image, caption); mode="eval" one per image, its captions as references (the
target is the first). Malformed files raise AnnotationError; images the file names but the disk lacks raise
MissingImagesError at construction, or with on_missing="skip" are left out and counted in `num_skipped`.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

from torch.utils.data import Dataset

from vlm.data.checks import MODES, check_choice, check_images, clean_text, field, read_json
from vlm.data.errors import AnnotationError
from vlm.data.sample import Sample

KARPATHY_SPLITS = ("train", "val", "test", "restval", "train+restval")
COCO_PARTS = ("all", "train", "val")
# COCO 2017 has no public test captions, so its val set is the test split here and validation is carved out of
# train2017: this share of its images (5k val images are held out for testing; ~1.2k of 118k choose checkpoints).
VALIDATION_SHARE = 0.01


def validation_images(image_ids: list[int | str], share: float = VALIDATION_SHARE) -> set[int | str]:
    """`share` of the images (at least one), chosen by a hash of their ids: the same whatever order a file lists
    them in, on every machine and Python (crc32, unlike hash(), is not salted per process)."""
    by_hash = sorted(image_ids, key=lambda image_id: (zlib.crc32(str(image_id).encode()), str(image_id)))
    return set(by_hash[: max(1, round(len(by_hash) * share))])


class CaptionDataset(Dataset):
    """Images with their reference captions, from either format. Holds plain lists (no Sample objects) so that
    COCO's 600k captions stay small and cheap to send to DataLoader workers."""

    def __init__(
        self,
        image_ids: list[int | str],
        image_paths: list[str],
        captions: list[list[str]],
        annotation_file: str | Path,
        source: str,
        mode: str,
        on_missing: str,
    ):
        check_choice("mode", mode, MODES)
        captioned = [i for i in range(len(image_paths)) if captions[i]]  # an image without text teaches nothing
        present = check_images([image_paths[i] for i in captioned], on_missing, annotation_file)
        keep = [i for i, ok in zip(captioned, present) if ok]
        self.num_skipped = present.count(False)  # images named by the annotations but missing on disk
        self.image_ids = [image_ids[i] for i in keep]
        self.image_paths = [image_paths[i] for i in keep]
        self.captions = [captions[i] for i in keep]
        self.source, self.mode = source, mode
        # train: a row per caption as (image index, caption index); eval: a row per image.
        self.rows = (
            [(i, c) for i, refs in enumerate(self.captions) for c in range(len(refs))]
            if mode == "train"
            else [(i, 0) for i in range(len(self.captions))]
        )

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> Sample:
        image_index, caption_index = self.rows[index]
        references = self.captions[image_index]
        return Sample(
            image=self.image_paths[image_index],
            target=references[caption_index],
            references=list(references),
            image_id=self.image_ids[image_index],
            source=self.source,
        )

    def sample_image_ids(self) -> list[int | str]:
        return [self.image_ids[image_index] for image_index, _ in self.rows]

    def image_groups(self) -> list[list[int]] | None:
        """train mode: the rows of each image (see `mixture_order`); eval mode has one row per image already."""
        if self.mode != "train":
            return None
        groups: list[list[int]] = [[] for _ in self.captions]
        for row, (image_index, _) in enumerate(self.rows):
            groups[image_index].append(row)
        return groups

    def texts(self) -> list[str]:
        return [caption for references in self.captions for caption in references]


class CocoCaptions(CaptionDataset):
    """COCO `captions_{train,val}{2014,2017}.json`: {"images": [{"id", "file_name"}], "annotations": [{"image_id",
    "caption"}]}; image files are `image_dir/file_name`. Images without any caption are left out.

    part: "all" the file's images; "val" the `validation_images` held out of them; "train" the rest."""

    def __init__(
        self,
        annotation_file: str | Path,
        image_dir: str | Path,
        mode: str = "train",
        on_missing: str = "error",
        part: str = "all",
    ):
        check_choice("part", part, COCO_PARTS)
        data = read_json(annotation_file, dict)
        for key in ("images", "annotations"):
            field(data, key, list, annotation_file, "the top level")
        image_ids, image_paths, index_of = [], [], {}
        for n, entry in enumerate(data["images"]):
            where = f"images[{n}]"
            image_id = field(entry, "id", (int, str), annotation_file, where)
            file_name = field(entry, "file_name", str, annotation_file, f"{where} (id {image_id})")
            if image_id in index_of:
                raise AnnotationError(f"{annotation_file}: {where}: image id {image_id!r} appears twice")
            index_of[image_id] = len(image_ids)
            image_ids.append(image_id)
            image_paths.append(os.path.join(image_dir, file_name))
        captions: list[list[str]] = [[] for _ in image_ids]
        for n, entry in enumerate(data["annotations"]):
            where = f"annotations[{n}]"
            if isinstance(entry, dict) and "id" in entry:
                where += f" (id {entry['id']})"
            image_id = field(entry, "image_id", (int, str), annotation_file, where)
            caption = field(entry, "caption", str, annotation_file, where)
            if image_id not in index_of:
                raise AnnotationError(f"{annotation_file}: {where}: 'image_id' {image_id!r} is not in 'images'")
            captions[index_of[image_id]].append(clean_text(caption))
        if part != "all":
            held_out = validation_images(image_ids)
            keep = [i for i, image_id in enumerate(image_ids) if (image_id in held_out) == (part == "val")]
            image_ids, image_paths = [image_ids[i] for i in keep], [image_paths[i] for i in keep]
            captions = [captions[i] for i in keep]
        self.part = part
        super().__init__(image_ids, image_paths, captions, annotation_file, "coco", mode, on_missing)


class KarpathyCaptions(CaptionDataset):
    """Karpathy's split file: {"dataset": "coco"|"flickr8k"|"flickr30k", "images": [{"filename", "split",
    "sentences": [{"raw"}], "filepath"? , "cocoid" or "imgid"}]}. Image files are `image_root/filepath/filename`
    (COCO: filepath is train2014 or val2014) or `image_root/filename` (Flickr: no filepath).

    split "train+restval" is the usual training set for COCO (113k images); Flickr files have no "restval"."""

    def __init__(
        self,
        dataset_json: str | Path,
        image_root: str | Path,
        split: str = "train",
        mode: str = "train",
        on_missing: str = "error",
    ):
        check_choice("split", split, KARPATHY_SPLITS)
        wanted = set(split.split("+"))
        data = read_json(dataset_json, dict)
        field(data, "images", list, dataset_json, "the top level")
        name = data.get("dataset")
        source = name if isinstance(name, str) and name else "karpathy"
        image_ids, image_paths, captions = [], [], []
        for n, entry in enumerate(data["images"]):
            where = f"images[{n}]"
            file_name = field(entry, "filename", str, dataset_json, where)
            where = f"images[{n}] ({file_name})"
            image_split = field(entry, "split", str, dataset_json, where)
            if image_split not in ("train", "val", "test", "restval"):
                raise AnnotationError(
                    f"{dataset_json}: {where}: 'split' should be train, val, test or restval, got {image_split!r}"
                )
            sentences = field(entry, "sentences", list, dataset_json, where)
            references = [
                clean_text(field(sentence, "raw", str, dataset_json, f"{where} sentences[{s}]"))
                for s, sentence in enumerate(sentences)
            ]
            if image_split not in wanted:
                continue
            id_key = "cocoid" if "cocoid" in entry else "imgid"
            image_ids.append(field(entry, id_key, (int, str), dataset_json, where))
            folder = field(entry, "filepath", str, dataset_json, where) if "filepath" in entry else ""
            image_paths.append(os.path.join(image_root, folder, file_name))
            captions.append(references)
        self.split = split
        super().__init__(image_ids, image_paths, captions, dataset_json, source, mode, on_missing)
