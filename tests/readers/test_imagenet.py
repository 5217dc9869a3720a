"""ImageNet class folders: sorted wnids, and keys a `labelwise relabel` store is found by."""
import numpy as np
import pytest

from labelwise.datasets import read_imagenet_folder
from labelwise.errors import DataError

from .conftest import build_mm_dataset, check_loaded_sample, image_colour, write_images

WNIDS = ("n01440764", "n01443537", "n01484850", "n01491361")  # n01443537 has no folder in the miniature


@pytest.fixture
def imagenet(miniature):
    root = miniature("imagenet")
    files = (root / "fixture-images.txt").read_text().split()
    (root / "fixture-images.txt").unlink()
    write_images(root, files)
    (root / "train" / "n01440764" / "notes.txt").write_text("not an image")  # skipped
    return root, files


def test_read_imagenet_folder_classes_are_sorted_wnids(imagenet):
    root, files = imagenet
    ls = read_imagenet_folder(root)
    assert ls.class_keys == ls.classes == ("n01440764", "n01484850", "n01491361")  # the folders present
    assert ls.paths == tuple(sorted(files))
    assert ls.labels.tolist() == [0, 0, 1, 2, 2]
    mapped = read_imagenet_folder(root, synset_mapping="LOC_synset_mapping.txt")
    assert mapped.class_keys == WNIDS  # the mapping's classes: indices do not shift
    assert mapped.classes[0] == "tench, Tinca tinca" and mapped.classes[1] == "goldfish, Carassius auratus"
    assert mapped.labels.tolist() == [0, 0, 2, 3, 3]


def test_imagenet_errors(imagenet, tmp_path):
    root, _ = imagenet
    with pytest.raises(DataError, match=r"ImageNet folder .*/val does not exist"):
        read_imagenet_folder(root, split="val")
    with pytest.raises(DataError, match=r"split: folder '\.\./x' is outside the dataset root"):
        read_imagenet_folder(root, split="../x")
    (root / "train" / "n09999999").mkdir()
    with pytest.raises(DataError, match=r"wnid 'n09999999' is not in .*LOC_synset_mapping.txt"):
        read_imagenet_folder(root, synset_mapping="LOC_synset_mapping.txt")
    with open(root / "LOC_synset_mapping.txt", "a") as f:
        f.write("n01440764 tench again\n")
    with pytest.raises(DataError, match=r"LOC_synset_mapping.txt, line 5: wnid n01440764 is listed twice"):
        read_imagenet_folder(root, synset_mapping="LOC_synset_mapping.txt")
    outside = tmp_path / "elsewhere.jpg"
    outside.write_bytes((root / "train" / "n01440764" / "n01440764_10026.JPEG").read_bytes())
    (root / "train" / "n01484850" / "link.jpg").symlink_to(outside)
    with pytest.raises(DataError, match=r"link.jpg links to .*elsewhere.jpg, outside the dataset root"):
        read_imagenet_folder(root)


def _write_store(path, keys, num_classes):
    from labelwise.plugins.labelpool.store import LabelMapWriter

    rng = np.random.default_rng(0)
    scores = rng.normal(0, 3, size=(len(keys), 2, 2, 2)).astype(np.float32)
    ids = np.stack([rng.permutation(num_classes)[:2] for _ in range(len(keys) * 4)])
    ids = ids.reshape(len(keys), 2, 2, 2).transpose(0, 3, 1, 2)
    writer = LabelMapWriter(path, keys=keys, num_classes=num_classes, k=2, height=2, width=2, shard_size=2)
    for shard in writer.pending_shards():
        start, stop = writer.shard_range(shard)
        writer.write_shard(shard, scores[start:stop], ids[start:stop])
    return path


def test_labelpool_store_written_for_the_folder_is_found_by_key(imagenet, tmp_path):
    from labelwise.adapters.torch_data import LabelSetDataset
    from labelwise.adapters.torch_labelpool import LabelPoolingDataset
    from labelwise.plugins.labelpool.pooling import pool_label_map_numpy
    from labelwise.plugins.labelpool.relabel import read_image_list
    from labelwise.plugins.labelpool.store import LabelMapStore

    root, files = imagenet
    ls = read_imagenet_folder(root, synset_mapping="LOC_synset_mapping.txt")
    keys = read_image_list(root)  # the keys `labelwise relabel --data-root <root>` stores
    assert sorted(keys) == sorted(ls.paths)
    store = _write_store(tmp_path / "maps", keys[::-1], num_classes=4)  # another order: found by key, not index
    maps = LabelMapStore(store)
    assert all(path in maps for path in ls.paths)

    def expected(path):
        scores, ids = maps.get(path)
        return pool_label_map_numpy(scores, ids, np.array([0.0, 0.0, 1.0, 1.0]), num_classes=4)

    for data_root in (str(root), None):  # stripped from img_path, or the path's end matched
        ds = build_mm_dataset(dict(
            type="labelwise.ImageNetFolder", data_root=str(root), synset_mapping="LOC_synset_mapping.txt",
            pipeline=[dict(type="LoadImageFromFile"),
                      dict(type="labelwise.LabelPooling", label_maps=str(store), num_classes=4, data_root=data_root),
                      dict(type="PackInputs")]))
        assert ds.metainfo["classes"] == ls.classes
        for i in (0, 3):
            sample = check_loaded_sample(ds, i, colour=image_colour(files.index(ls.paths[i])))
            assert np.allclose(sample.gt_score.numpy(), expected(ls.paths[i]), atol=1e-6)
            assert sample.gt_label.tolist() == [ls.labels[i]]
    torch_ds = LabelPoolingDataset(LabelSetDataset(ls, transform=lambda img: img), store, num_classes=4)
    image, target = torch_ds[4]
    assert image.size == (16, 12) and np.allclose(target.numpy(), expected(ls.paths[4]), atol=1e-6)
