"""`n2n.compress`: the whole N2N pipeline from a teacher module and data to a small student."""
from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from .arch import count_flops, count_params
from .arch.ignored import resolve_ignored
from .baselines import BUILDERS as BASELINES
from .baselines import run_baseline
from .config import SearchConfig, from_dict, to_dict
from .data.user import DataLike, check_label_range, tensor_pair, warn_if_prepared_otherwise
from .distill.data import DistillData
from .distill.trainer import distill
from .errors import ConfigError, N2NError
from .runtime import kept_random_state, resolve_device, seed_everything
from .search.loop import Search
from .search.scorer import StageResult
from .search.state import ResumePoint, SearchStore
from .training import accuracy

log = logging.getLogger(__name__)


@dataclass
class CompressionResult:
    student: nn.Module
    history: list[Any]  # CandidateRecord and EpochRecord, in the order they happened
    summary: dict[str, Any]
    stages: list[StageResult]

    final_stage: StageResult | None = None  # the stage whose best child became the student
    # what save_student records to rebuild the student on a fresh instance of the teacher's class
    example_input: torch.Tensor | None = None  # one input, on the CPU
    teacher_class: str | None = None  # module.QualifiedName

    @property
    def rewrites(self) -> list[dict[str, Any]]:
        """The rewrites that turn the teacher's architecture into the student's."""
        return self.final_stage.rewrites if self.final_stage else []

    @property
    def student_arch(self) -> dict[str, Any] | None:
        """The student's own zoo spec where it is no rewrite of the teacher (the kd baseline), else None."""
        return self.final_stage.arch if self.final_stage else None


def check_teacher_runs(teacher: nn.Module, example_input: torch.Tensor) -> int:
    """The teacher's number of outputs; one clear line when the data do not fit its input."""
    try:
        with torch.no_grad():
            logits = teacher.eval()(example_input)
    except RuntimeError as error:
        raise ConfigError(f"the teacher cannot read inputs of shape {tuple(example_input.shape[1:])} "
                          f"({str(error).splitlines()[0]})") from None
    return int(logits.shape[-1])


def compress(
    teacher: nn.Module,
    train_data: DataLike,
    val_data: DataLike,
    *,
    test_data: DataLike | None = None,
    config: SearchConfig | None = None,
    device: str | None = None,
    progress: bool = True,
    on_record: Callable[[Any], None] | None = None,
    crop_padding: int = 0,
    hflip: bool = False,
    crop_fill: float | tuple[float, ...] = 0.0,
    store: SearchStore | None = None,
    resume: ResumePoint | None = None,
    **options: Any,
) -> CompressionResult:
    """Search a small student for `teacher` (stage 1 removes layers, stage 2 shrinks them).

    Data are normalised inputs as the teacher expects them, each split a DataLoader, a Dataset or
    an (inputs, labels) pair (read once per call: see n2n.data.user). `options` override fields of
    SearchConfig by name (e.g. epochs_per_stage=10, max_params=50_000). `crop_padding`,
    `hflip` and `crop_fill` (what the crop pads with, in the inputs' normalised units: a black
    pixel is -mean/std) describe the data's augmentation, used where a DistillConfig sets `augment`.
    A `store` receives snapshots to resume from; `resume` continues a killed run.
    The caller's `teacher` keeps its device and train/eval mode, and the global random
    generators (Python, NumPy, torch) are as they were before the call.
    """
    config = from_dict(SearchConfig, options, "options", base=config or SearchConfig()).validate()
    with kept_random_state():
        seed_everything(config.seed)
        dev = resolve_device(device)
        teacher = copy.deepcopy(teacher).to(dev).eval()  # the search's own copy, moved and switched freely
        resolve_ignored(teacher, config.ignored_layers)  # a name that is no layer: refused before the data are read
        test = tensor_pair(test_data, "test_data") if test_data is not None else None
        data, example_input = prepare_data(teacher, train_data, val_data, dev, test, crop_padding=crop_padding,
                                           hflip=hflip, crop_fill=crop_fill)
        result = search_student(teacher, data, example_input, config, test, dev, on_record=on_record,
                                progress=progress, store=store, resume=resume)
    result.example_input = example_input[:1].detach().cpu()
    result.teacher_class = f"{type(teacher).__module__}.{type(teacher).__qualname__}"
    return result


def prepare_data(teacher: nn.Module, train_data: DataLike, val_data: DataLike, device: torch.device,
                 test: tuple[torch.Tensor, torch.Tensor] | None = None,
                 **augmentation: Any) -> tuple[DistillData, torch.Tensor]:
    """The data on `device` with the teacher's logits attached, and one example input; every
    split's labels are checked against the teacher's outputs before its pass over the data."""
    train_x, train_y = tensor_pair(train_data, "train_data")
    val_x, val_y = tensor_pair(val_data, "val_data")
    example_input = train_x[:1].to(device)
    classes = check_teacher_runs(teacher, example_input)
    for what, labels in (("train_data", train_y), ("val_data", val_y), ("test_data", test[1] if test else None)):
        if labels is not None:
            check_label_range(labels, classes, what)
    warn_if_prepared_otherwise(train_x, {"val_data": val_x, **({"test_data": test[0]} if test else {})})
    data = DistillData(train_x, train_y, val_x, val_y, **augmentation)
    return data.to(device).attach_teacher(teacher), example_input


def search_student(teacher: nn.Module, data: DistillData, example_input: torch.Tensor, config: SearchConfig,
                   test: tuple[torch.Tensor, torch.Tensor] | None, dev: torch.device, progress: bool,
                   **search_options: Any) -> CompressionResult:
    """The search (or baseline), then the final distillation of its best child."""
    started = time.perf_counter()
    search = Search(teacher, data, example_input, config, progress=progress, **search_options)
    stages = run_baseline(config.method, search) if config.method in BASELINES else search.run()
    final_stage = search.student_stage(stages)
    if final_stage is None:
        raise N2NError(no_student_message(config))
    student = copy.deepcopy(final_stage.best_child)  # the stage keeps its child as the search scored it
    log.info("final distillation of the best child of the %s stage (%d parameters)", final_stage.name,
             count_params(student))
    distill(student, data, config.final, seed=config.seed, teacher=teacher,
            progress="final distillation" if progress else None)
    summary = build_summary(teacher, student, data, example_input, search, stages, config, test, dev)
    summary["search_seconds"] = time.perf_counter() - started
    return CompressionResult(student.eval(), search.history, summary, stages, final_stage)


def no_student_message(config: SearchConfig) -> str:
    limits = [f"{name} {value}" for name, value in
              (("max params", config.max_params), ("max flops", config.max_flops),
               ("compression", config.compression), ("min accuracy", config.min_accuracy)) if value is not None]
    because = f" meeting {', '.join(limits)}" if limits else ""
    if config.method in BASELINES:
        return f"the {config.method} baseline found no valid student{because}: see the run's log for why"
    narrower = f", lower min_width (now {config.min_width})" if config.has_budget else ""
    return (f"no valid child{because} was found in {config.epochs_per_stage} policy epochs per stage: "
            f"loosen the constraints{narrower} or search longer")


def build_summary(teacher: nn.Module, student: nn.Module, data: DistillData, example_input: torch.Tensor,
                  search: Search, stages: list[StageResult], config: SearchConfig,
                  test: tuple[torch.Tensor, torch.Tensor] | None, device: torch.device) -> dict[str, Any]:
    def describe(model: nn.Module, val_accuracy: float) -> dict[str, Any]:
        test_accuracy = accuracy(model, test[0].to(device), test[1].to(device)) if test else None
        return {"params": count_params(model), "flops": count_flops(model, example_input),
                "val_accuracy": val_accuracy, "test_accuracy": test_accuracy}

    teacher_row = describe(teacher, search.scorer.teacher_stats.val_accuracy)
    student_row = describe(student, accuracy(student, data.val_images, data.val_labels))
    return {
        "teacher": teacher_row, "student": student_row,
        "compression": teacher_row["params"] / student_row["params"],
        "stages": [stage.summary() for stage in stages], "config": to_dict(config),
    }
