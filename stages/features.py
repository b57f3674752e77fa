"""Stage features: 2048-d features of the transfer set from the frozen ImageNet ResNet-50.

    python -m stages.features

Reads params `seed`, `device`, `precision`, `transfer.{dataset,image_size,eval_batch_size,
num_workers,resident_mb,train_samples,val_samples}`, data/raw/<transfer.dataset>/ and
data/weights/resnet50.pth. Writes data/features/{train,val}.pt: features (N, 2048) float32
(global-average-pooled output of the last residual block, evaluation transform), labels,
classes, files.
"""
import time
from pathlib import Path

from stages.lib import transfer
from stages.lib.core import data, inference, params, runtime
from stages.lib.core.common import StageError, run
from stages.lib.core.files import save_torch

OUT = Path("data/features")


def main(argv):
    if argv:
        raise StageError("usage: python -m stages.features")
    settings = params.load()
    shared, cfg = params.shared(settings), params.transfer_data(settings, training=False)
    device, amp_dtype = runtime.setup(shared)
    root = transfer.dataset_root(cfg)
    classes = transfer.classes_of(root)
    model = inference.prepare(transfer.pretrained_resnet50(len(classes)), device).eval()

    OUT.mkdir(parents=True, exist_ok=True)
    for split in data.SPLITS:
        start = time.perf_counter()
        images = transfer.image_set(root, split, cfg, shared.seed, device)
        _, labels, features, _ = inference.predict(model, images.batches(cfg.eval_batch_size),
                                                device, amp_dtype, embed=True)
        files = [str(Path(p).relative_to(root)) for p in images.files]
        save_torch({"features": features, "labels": labels, "classes": classes, "files": files},
                   OUT / f"{split}.pt")
        print(f"features/{split}: {tuple(features.shape)} in "
              f"{time.perf_counter() - start:.1f} s", flush=True)


if __name__ == "__main__":
    run(main)
