"""(c) Child training against a bare loop: images per second of one proxy epoch through
n2n's `distill` and through the least a PyTorch loop can do on the same child, tensors,
batch size, optimizer and loss. Run by search_cost.py on its first child.
"""
from __future__ import annotations

import copy
import statistics
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from measure import number, timed
from n2n.distill.data import DistillData
from n2n.distill.losses import make_distill_loss
from n2n.distill.trainer import DistillConfig, distill


def bare_epoch(model: nn.Module, data: DistillData, config: DistillConfig, seed: int) -> None:
    """The least one distillation epoch can be: shuffle, forward, loss, backward, step."""
    criterion = make_distill_loss(config.loss, temperature=config.temperature, alpha=config.alpha)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    order = torch.randperm(len(data.train_labels), generator=torch.Generator().manual_seed(seed))
    order = order.to(data.train_labels.device)
    model.train()
    for start in range(0, len(order), config.batch_size):
        index = order[start : start + config.batch_size]
        loss = criterion(model(data.train_images[index]), data.teacher_logits[index], data.train_labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def training_speed(child: Any, proxy: Any, repeats: int) -> dict[str, Any]:
    """Images per second of one proxy epoch, n2n's distill and the bare loop taking turns (median of each)."""
    config = replace(proxy.config, epochs=1)
    # no validation images: distill's time is its training alone, as the bare loop's
    data = replace(proxy.data, val_images=proxy.data.val_images[:0], val_labels=proxy.data.val_labels[:0])
    device = data.train_images.device
    project, bare = [], []
    for _ in range(repeats):
        model = copy.deepcopy(child.proxy_child)
        project.append(timed(lambda: distill(model, data, config, seed=child.seed), device)[1])
        model = copy.deepcopy(child.proxy_child)
        bare.append(timed(lambda: bare_epoch(model, data, config, child.seed), device)[1])
    images = len(data.train_labels)
    n2n_rate, bare_rate = images / statistics.median(project), images / statistics.median(bare)
    return {"child": child.name, "images": images, "batch_size": config.batch_size, "repeats": repeats,
            "threads": torch.get_num_threads(), "n2n_seconds": project, "bare_seconds": bare,
            "n2n_images_per_second": n2n_rate, "bare_images_per_second": bare_rate,
            "throughput_ratio": n2n_rate / bare_rate}


def speed_table(speed: dict[str, Any]) -> list[str]:
    return ["## Child training speed", "", "| loop | images | images/second |", "|---|---:|---:|",
            f"| n2n distill | {speed['images']:,} | {number(speed['n2n_images_per_second'], 0)} |",
            f"| bare PyTorch | {speed['images']:,} | {number(speed['bare_images_per_second'], 0)} |", "",
            f"n2n runs at {number(100 * speed['throughput_ratio'], 1)} % of the bare loop's speed "
            f"({speed['threads']} torch threads, median of {speed['repeats']})."]
