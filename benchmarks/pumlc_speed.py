"""PU-MLC cost: loss forward+backward vs BCE (B=64, C=80), and the training-step overhead of LGC.

    python benchmarks/pumlc_speed.py

Median of repeated timings on CPU (torch's default thread count). The LGC overhead is one
AdamW training step (forward, backward, update) of a ResNet-18 (timm, 64 px, batch 32) with
and without every 3x3 conv converted.
"""
import platform
import statistics
import time

import torch

from labelwise.plugins.pumlc.loss import partial_bce, pu_loss


def median_ms(fn, repeat: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def loss_step(loss_fn, logits, targets):
    def run():
        z = logits.detach().requires_grad_(True)
        loss_fn(z, targets).backward()
    return run


def train_step(model, x, y):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def run():
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return run


def main() -> int:
    import timm

    from labelwise.plugins.pumlc.lgc import added_parameters, convert_to_lgc

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 80, generator=g)
    targets = torch.randint(-1, 2, (64, 80), generator=g)
    bce = median_ms(loss_step(lambda z, t: partial_bce(z, t, unknown="negative"), logits, targets), 300)
    torch_bce = median_ms(loss_step(lambda z, t: torch.nn.functional.binary_cross_entropy_with_logits(
        z, (t == 1).float()), logits, targets), 300)
    pu = median_ms(loss_step(pu_loss, logits, targets), 300)
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print("| loss (B=64, C=80), forward + backward | ms | vs BCE |")
    print("|---|---|---|")
    print(f"| BCE (torch, mean) | {torch_bce:.3f} | {torch_bce / torch_bce:.2f} |")
    print(f"| BCE (labelwise partial_bce, assume negative) | {bce:.3f} | {bce / torch_bce:.2f} |")
    print(f"| PU-MLC (pu_loss) | {pu:.3f} | {pu / torch_bce:.2f} |")

    x = torch.randn(32, 3, 64, 64, generator=g)
    y = torch.randint(0, 10, (32,), generator=g)
    torch.manual_seed(0)
    plain = timm.create_model("resnet18", pretrained=False, num_classes=10)
    torch.manual_seed(0)
    lgc = timm.create_model("resnet18", pretrained=False, num_classes=10)
    convert_to_lgc(lgc)
    t_plain = median_ms(train_step(plain, x, y), 10, warmup=2)
    t_lgc = median_ms(train_step(lgc, x, y), 10, warmup=2)
    n_plain = sum(p.numel() for p in plain.parameters())
    print()
    print("| ResNet-18 (timm), 64 px, batch 32, one AdamW step | ms | ratio | parameters |")
    print("|---|---|---|---|")
    print(f"| plain | {t_plain:.1f} | 1.00 | {n_plain / 1e6:.2f} M |")
    print(f"| every 3x3 conv -> LGC | {t_lgc:.1f} | {t_lgc / t_plain:.2f} | "
          f"{(n_plain + added_parameters(lgc)) / 1e6:.2f} M (+{added_parameters(lgc) / 1e6:.2f} M) |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
