"""jsonargparse's errors (recorded from ``vlmkit fit`` with jsonargparse 4.53) become one line with close matches."""

import argparse

from vlmkit.cli.parse_errors import one_line_parse_error
from vlmkit.cli.suggest import close_matches, did_you_mean, unknown_command

BAD_CONNECTOR = """Parser key "model.vlm":
  Problem with given class_path 'vlmkit.model.VisionLanguageModel':
    Parser key "connector":

      - Expected a path but vlmkit.connectors.MLPProjektion either not accessible or invalid
      - Type collections.abc.Callable[[int, int], torch.nn.modules.module.Module] expects a function or a callable class: module 'vlmkit.connectors' has no attribute 'MLPProjektion'. Got value: vlmkit.connectors.MLPProjektion"""  # noqa: E501

BAD_ARGUMENT = """Parser key "model.vlm":
  Problem with given class_path 'vlmkit.model.VisionLanguageModel':
    Parser key "connector":
      Type collections.abc.Callable[[int, int], torch.nn.modules.module.Module] expects a function or a callable class: Option 'num_latentz' is not accepted. Got value: Namespace(class_path='vlmkit.connectors.PerceiverResampler', init_args=Namespace(num_latentz='3'))"""  # noqa: E501

BAD_DATA_ARGUMENT = """Parser key "data":
  Does not validate against any of the Union subtypes
  Subtypes: [<class 'lightning.pytorch.core.datamodule.LightningDataModule'>, <class 'NoneType'>]
  Errors:
    - Problem with given class_path 'vlmkit.data.SyntheticVQADataModule':
        Option 'batch_sise' is not accepted
    - Expected a <class 'NoneType'>
  Given value type: <class 'jsonargparse._util.NestedArg'>
  Given value: NestedArg(key='batch_sise', val='3')"""

BAD_CHOICE = """Parser key "trainer.precision":
  Does not validate against any of the Union subtypes
  Subtypes: [typing.Literal[64, 32, 16], typing.Literal['16-true', '16-mixed', 'bf16-true', 'bf16-mixed', '32-true'], typing.Literal['64', '32', '16', 'bf16'], <class 'NoneType'>]
  Errors:
    - Expected a <class 'int'>
  Given value type: <class 'str'>
  Given value: bf17"""  # noqa: E501


def test_close_matches_and_valid_names():
    assert close_matches("max_stpes", ["max_steps", "min_steps", "precision"])[0] == "max_steps"
    assert close_matches("vlmkit.connectors.MLPProjektion", ["vlmkit.connectors.MLPProjection"]) == [
        "vlmkit.connectors.MLPProjection"
    ]
    assert did_you_mean("zzz", ["a", "b"]) == "; valid: a, b"
    assert did_you_mean("aa", ["a", "b"], show_all=0) == "; did you mean a?"
    assert "did you mean fit?" in str(unknown_command("fitt", ["fit", "validate"]))


def test_unknown_option_suggests_the_options_of_the_parser():
    parser = argparse.ArgumentParser()
    parser.add_argument("--trainer.max_steps")
    parser.add_argument("--trainer.precision")
    line = one_line_parse_error("unrecognized arguments: fit --trainer.max_stpes 3", parser)
    assert line.startswith("unknown option --trainer.max_stpes; did you mean --trainer.max_steps?")
    assert "\n" not in line


def test_unknown_class_path_lists_vlmkits_parts_of_that_slot():
    line = one_line_parse_error(BAD_CONNECTOR)
    assert line.startswith("--model.vlm.connector vlmkit.connectors.MLPProjektion: no such class; did you mean ")
    assert "vlmkit.connectors.MLPProjection" in line.split("?")[0]
    assert "Valid: " in line and "vlmkit.connectors.PerceiverResampler" in line and "torch" not in line


def test_unknown_argument_of_a_part_lists_its_arguments():
    line = one_line_parse_error(BAD_ARGUMENT)
    assert line.startswith("--model.vlm.connector.num_latentz: vlmkit.connectors.PerceiverResampler has no argument")
    assert "did you mean num_latents?" in line and "num_key_value_heads" in line
    line = one_line_parse_error(BAD_DATA_ARGUMENT)
    assert line.startswith("--data.batch_sise: vlmkit.data.SyntheticVQADataModule has no argument 'batch_sise'")
    assert "did you mean batch_size?" in line


def test_a_value_outside_the_choices_lists_them():
    line = one_line_parse_error(BAD_CHOICE)
    assert line.startswith("--trainer.precision bf17: not a valid value; did you mean bf16")
    assert "bf16-mixed" in line


def test_anything_else_is_jsonargparses_message_on_one_line():
    assert one_line_parse_error('Parser key "x":\n  something\n  else') == 'Parser key "x": something else'
