"""Training and inference throughput of the zoo architectures on this machine (images/s).

Sizes the profiles: the cpu zoo must pretrain in under 15 minutes on 2 cores. Prints the
ratio of each model's training throughput to ResNet-18's.
"""

import time

import torch
from torch.nn import functional as F

from compstudy import metrics, models
from compstudy.seeding import seed_everything


def train_images_per_second(model: torch.nn.Module, batch_size: int = 128, steps: int = 5) -> float:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    images, labels = torch.randn(batch_size, 3, 32, 32), torch.randint(0, 100, (batch_size,))
    model.train()
    for step in range(steps + 1):
        if step == 1:  # the first step warms up the allocator
            start = time.perf_counter()
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return batch_size * steps / (time.perf_counter() - start)


if __name__ == "__main__":
    seed_everything(0, threads=2)
    rates = {}
    for name in ("resnet18", "resnet34", "vit", "vit_mini"):
        model = models.build_model(name, num_classes=100)
        rates[name] = train_images_per_second(model)
        infer = metrics.measure_latency(model, batch_size=256, num_threads=2)["images_per_s"]
        print(f"{name:9s} train {rates[name]:7.0f} img/s  ({rates[name] / rates['resnet18']:.2f}x resnet18)"
              f"  inference {infer:7.0f} img/s")
