import io
import pickle

import pytest
import torch
import torchvision

from flywheel.errors import InvalidInputError, NotFoundError
from flywheel.learn.backbones import build_backbone
from flywheel.learn.pretrained import load_pretrained, match_backbone
from flywheel.learn.ssl.loop import SSLConfig, train_ssl
from flywheel.store.blobs import BlobStore


def save(tmp_path, obj, name="weights.pt") -> str:
    path = tmp_path / name
    torch.save(obj, path)
    return str(path)


def test_torchvision_resnet_weights_start_our_resnet(tmp_path):
    torch.manual_seed(0)
    theirs = torchvision.models.resnet18(weights=None).state_dict()  # as a .pth file has it
    template = build_backbone("resnet18", 3, 32)  # small input: a 3x3 CIFAR stem
    start = load_pretrained(save(tmp_path, theirs), template, None)
    assert torch.equal(start.state["trunk.layer3.1.conv2.weight"], theirs["layer3.1.conv2.weight"])
    # the 7x7 ImageNet stem does not fit the 3x3 one: kept at its own init, and said so
    assert not torch.equal(
        start.state["trunk.conv1.weight"][:, :, :1, :1], theirs["conv1.weight"][:, :, :1, :1]
    )
    assert any(n.startswith("conv1.weight: shape (64, 3, 7, 7)") for n in start.notes)
    assert start.total == start.matched + 1  # every weight tensor but conv1
    assert start.summary()["matched"] == f"{start.matched}/{start.total} tensors"
    template.load_state_dict(start.state)  # a full, loadable state dict


def test_an_ssl_checkpoint_and_a_dino_teacher_are_found_in_their_containers(tmp_path):
    template = build_backbone("small_cnn", 1, None, 8)
    result = train_ssl(
        torch.randint(0, 255, (8, 8, 8), dtype=torch.uint8).numpy(),
        SSLConfig(width=8, hidden_dim=16, embedding_dim=8, epochs=1, batch_size=4),
        tmp_path / "ssl",
    )
    start = load_pretrained(str(tmp_path / "ssl" / "ssl_last.pt"), template, None)
    assert start.matched == start.total and not start.notes
    for key, value in result.backbone.state_dict().items():
        assert torch.equal(start.state[key], value)

    teacher = {f"module.backbone.{k}": v + 1 for k, v in result.backbone.state_dict().items()}
    student = {f"module.backbone.{k}": v for k, v in result.backbone.state_dict().items()}
    dino = {"student": student, "teacher": teacher, "epoch": 100}
    start = load_pretrained(save(tmp_path, dino, "dino.pth"), template, None)
    key = "trunk.features.0.weight"
    assert torch.equal(start.state[key], result.backbone.state_dict()[key] + 1)  # the teacher


def test_colour_filters_start_a_grey_model_as_their_sum():
    colour = build_backbone("small_cnn", 3, None, 8).state_dict()
    grey = build_backbone("small_cnn", 1, None, 8)
    state, matched, notes = match_backbone(grey, colour)
    w = colour["trunk.features.0.weight"]  # (8, 3, 3, 3)
    expected = w[:, 0:1] + w[:, 1:2] + w[:, 2:3]
    assert torch.allclose(state["trunk.features.0.weight"], expected)
    assert "trunk.features.0.weight" in matched
    assert notes == ["features.0.weight: colour filters summed for grey input"]


def test_a_checkpoint_of_another_architecture_is_refused(tmp_path):
    other = torchvision.models.resnet18(weights=None).state_dict()
    with pytest.raises(InvalidInputError, match="sets 0 of the small_cnn backbone's"):
        load_pretrained(save(tmp_path, other), build_backbone("small_cnn", 1, None, 8), None)


def test_sources_blob_and_bad_files(tmp_path):
    template = build_backbone("small_cnn", 1, None, 8)
    buf = io.BytesIO()
    torch.save({"state_dict": template.state_dict()}, buf)
    blobs = BlobStore(str(tmp_path / "store"))
    sha = blobs.put(buf.getvalue()).sha256
    start = load_pretrained(f"blob:{sha}", template, blobs)
    assert start.digest == sha and start.matched == start.total
    with pytest.raises(NotFoundError):
        load_pretrained(str(tmp_path / "nothing.pt"), template, None)
    (tmp_path / "text.pt").write_text("not weights")
    with pytest.raises(InvalidInputError, match="not a readable weights file"):
        load_pretrained(str(tmp_path / "text.pt"), template, None)
    # a pickle that would run code on load is refused (weights_only)
    (tmp_path / "code.pt").write_bytes(pickle.dumps(print))
    with pytest.raises(InvalidInputError, match="not a readable weights file"):
        load_pretrained(str(tmp_path / "code.pt"), template, None)


def test_ssl_starts_from_the_pretrained_weights_and_keys_its_checkpoint_by_them(tmp_path):
    images = torch.randint(0, 255, (8, 8, 8), dtype=torch.uint8).numpy()
    cfg = SSLConfig(width=8, hidden_dim=16, embedding_dim=8, epochs=0, batch_size=4)
    init = build_backbone("small_cnn", 1, None, 8).state_dict()
    init = {k: v + 0.5 if v.is_floating_point() else v for k, v in init.items()}
    started = train_ssl(images, cfg, tmp_path / "a", init_backbone_state=init)
    for key, value in init.items():
        assert torch.equal(started.backbone.state_dict()[key], value)
    one_epoch = SSLConfig(width=8, hidden_dim=16, embedding_dim=8, epochs=1, batch_size=4)
    train_ssl(images, one_epoch, tmp_path / "b", init_backbone_state=init)
    with pytest.raises(ValueError, match="other images or another config"):
        train_ssl(images, one_epoch, tmp_path / "b")  # a random start must not resume it
