"""Parameters and forward FLOPs of a composed model, per part (the paper's Table 3 comparison).

    vlmkit report --config recipes/quickstart.yaml [--config ...] --text-length 128 --num-images 1
    python -m vlmkit.report ...   (the same)

Counts come from the model itself: parameters per part (total and trainable, as declared at
composition) and FLOPs measured by ``torch.utils.flop_counter`` on one sample of the given text
length and number of images, so any fusion, connector or backbone is accounted the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from vlmkit.model import VisionLanguageModel
from vlmkit.text.template import ChatTemplate
from vlmkit.trainability import count_parameters

PARTS = ("vision_encoder", "connector", "fusion", "language_model")


@dataclass(frozen=True)
class ModelReport:
    """Parameters per part and forward FLOPs of one sample.

    Attributes:
        parameters: ``{part: (total, trainable)}``.
        forward_flops: FLOPs of one forward pass over the sample.
        sequence_length: LM sequence length of the sample (text plus image placeholders).
    """

    parameters: dict[str, tuple[int, int]]
    forward_flops: int
    sequence_length: int

    def table(self) -> str:
        """A markdown table."""
        lines = ["| part | parameters | trainable |", "|---|---:|---:|"]
        for part, (total, trainable) in self.parameters.items():
            lines.append(f"| {part} | {total:,} | {trainable:,} |")
        lines.append(
            f"| forward GFLOPs / sample (LM length {self.sequence_length}) | {self.forward_flops / 1e9:.3f} | |"
        )
        return "\n".join(lines)


def model_report(
    vlm: VisionLanguageModel, text_length: int = 128, num_images: int = 1, image_size: tuple[int, int] = (384, 384)
) -> ModelReport:
    """Count parameters per part and measure the forward FLOPs of one sample.

    Args:
        vlm: The composed model.
        text_length: Text tokens of the sample (image placeholders come on top).
        num_images: Images of the sample, each ``image_size`` (height, width), a multiple of the patch size.
        image_size: Processed image size.
    """
    parameters = {}
    for part in PARTS:
        module = getattr(vlm, part)
        parameters[part] = (count_parameters(module), count_parameters(module, trainable_only=True))
    parameters["total"] = (count_parameters(vlm), count_parameters(vlm, trainable_only=True))
    template = ChatTemplate(vlm.tokenizer)
    height, width = image_size
    ids: list[int] = []
    for _ in range(num_images):
        ids += template._image_block(vlm.num_image_tokens(height, width), ids)
    filler = vlm.tokenizer.encode("a", add_special_tokens=False)[0]
    ids += [filler] * text_length
    device = next(vlm.parameters()).device
    input_ids = torch.tensor([ids], device=device)
    pixels = torch.zeros(num_images, 3, height, width, device=device) if num_images else None
    counter = FlopCounterMode(display=False)
    with counter:
        vlm(input_ids, torch.ones_like(input_ids), pixels)
    return ModelReport(parameters, counter.get_total_flops(), len(ids))


if __name__ == "__main__":  # python -m vlmkit.report: the same as `vlmkit report`
    from vlmkit.cli.report import main

    main()
