import json

import pytest

from autolabel.errors import ConfigError
from autolabel.ontology import Ontology


def test_prompt_specs_map_to_classes_and_queries():
    ont = Ontology.from_prompts(["car=car, automobile ,van", "person"])
    assert ont.names == ["car", "person"]
    assert ont.queries == ["car", "automobile", "van", "person"]
    assert ont.query_class_ids.tolist() == [0, 0, 0, 1]


@pytest.mark.parametrize(
    "specs, message",
    [
        (["person", "person"], "defined twice"),  # duplicate class
        (["=cat"], "empty"),  # empty class name
        (["cat="], "no prompts"),  # class with '=' and nothing after it
        (["cat=animal", "dog=animal"], "used by both"),  # one prompt, two classes: ambiguous
        ([], "no classes"),  # nothing at all
        (["   "], "empty"),  # whitespace only
    ],
)
def test_bad_prompt_specs_are_clear_errors(specs, message):
    with pytest.raises(ConfigError, match=message):
        Ontology.from_prompts(specs)


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_ontology_file_with_thresholds(tmp_path, suffix):
    data = {"classes": [{"name": "car", "prompts": ["car", "van"], "threshold": 0.3}, {"name": "person"}]}
    path = tmp_path / f"ont{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(data))
    else:
        import yaml

        path.write_text(yaml.safe_dump(data))
    ont = Ontology.from_file(path)
    assert ont.names == ["car", "person"]
    assert ont.thresholds(0.1).tolist() == pytest.approx([0.3, 0.1])
    assert Ontology.from_data(ont.to_dict()) == ont


def test_mapping_form_and_bad_files(tmp_path):
    assert Ontology.from_data({"car": ["car", "van"], "dog": "dog"}).queries == ["car", "van", "dog"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("classes: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        Ontology.from_file(bad)
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"classes": [')
    with pytest.raises(ConfigError, match="not valid JSON"):
        Ontology.from_file(bad_json)
    with pytest.raises(ConfigError, match="cannot read ontology file"):
        Ontology.from_file(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="threshold"):
        Ontology.from_data([{"name": "x", "threshold": 2}])
    with pytest.raises(ConfigError, match="unknown keys"):
        Ontology.from_data([{"name": "x", "colour": "red"}])


def test_with_thresholds_overrides_only_the_named_classes():
    ont = Ontology.from_data([{"name": "car", "prompts": ["car", "van"], "threshold": 0.3}, {"name": "dog"}])
    tuned = ont.with_thresholds({"dog": 0.25})
    assert tuned.thresholds(0.1).tolist() == pytest.approx([0.3, 0.25])
    assert tuned.queries == ont.queries
