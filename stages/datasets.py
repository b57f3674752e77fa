"""Stage datasets: the dataset size table (metrics/datasets.json).

    python -m stages.datasets

Reads data/raw/mnist, data/raw/cifar10, data/raw/<transfer.dataset> and params
`transfer.dataset`, `transfer.image_size`; writes metrics/datasets.json as
{dataset: {split: {height, width, channels, samples, classes, class_names}}}, where height and
width are the size the network sees (the transfer images are resized and cropped to
transfer.image_size).
"""
from pathlib import Path

from stages.lib import images
from stages.lib.core import data, params
from stages.lib.core.common import StageError, run
from stages.lib.core.files import write_json
from stages.lib.core.param_keys import param
from stages.lib.core.params import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE

OUT = Path("metrics/datasets.json")


def tensor_table(folder):
    table = {}
    for split in data.SPLITS:
        record = data.load_tensors(folder, split, mmap=True)
        n, c, h, w = record["images"].shape
        table[split] = {"height": h, "width": w, "channels": c, "samples": n,
                        "classes": len(record["classes"]), "class_names": record["classes"]}
    return table


def image_folder_table(root, image_size):
    classes = images.image_folder_classes(root)
    table = {}
    for split in data.SPLITS:
        dataset = images.image_folder(root, split, transform=None)
        table[split] = {"height": image_size, "width": image_size, "channels": 3,
                        "samples": len(dataset), "classes": len(classes), "class_names": classes}
    return table


def main(argv):
    if argv:
        raise StageError("usage: python -m stages.datasets")
    settings = params.load()
    transfer = param(settings, "transfer.dataset", str)
    image_size = param(settings, "transfer.image_size", int, minimum=MIN_IMAGE_SIZE,
                       maximum=MAX_IMAGE_SIZE)
    transfer_root = data.raw_folder(transfer)
    table = {"mnist": tensor_table(Path("data/raw/mnist")),
             "cifar10": tensor_table(Path("data/raw/cifar10")),
             transfer: image_folder_table(transfer_root, image_size)}
    write_json(OUT, table)
    for name, splits in table.items():
        print(name, {split: row["samples"] for split, row in splits.items()}, flush=True)


if __name__ == "__main__":
    run(main)
