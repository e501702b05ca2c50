import json

import numpy as np
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


# -- negatives and exemplars ------------------------------------------------------------------------


def _photo(path, size=(40, 30), seed=0):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def test_negative_prompt_specs_and_column_layout():
    ont = Ontology.from_prompts(["car=car,van;not=toy car,model car", "person;not=statue"])
    assert ont.queries == ["car", "van", "person"]
    assert ont.negative_queries == ["toy car", "model car", "statue"]
    assert ont.negative_query_class_ids.tolist() == [0, 0, 1]
    assert ont.positive_class_ids.tolist() == [0, 0, 1]
    assert ont.negative_class_ids.tolist() == [0, 0, 1]
    assert Ontology.from_data(ont.to_dict()) == ont


@pytest.mark.parametrize(
    "spec, message",
    [
        ("car;toy car", "not=negative"),  # a part after ';' that is not not=...
        ("car;not=", "not=negative"),  # not= with nothing after it
        ("car=car,van;not=Van", "as a prompt and as a negative"),  # a negative that is the class's own prompt
    ],
)
def test_bad_negative_specs_are_clear_errors(spec, message):
    with pytest.raises(ConfigError, match=message):
        Ontology.from_prompts([spec])


def test_ontologies_without_the_new_keys_record_the_same_dict():
    # Runs recorded before negatives and exemplars existed must resume: their dict is unchanged.
    data = {"classes": [{"name": "car", "prompts": ["car", "van"], "threshold": 0.3},
                        {"name": "person", "prompts": ["person"]}]}
    assert Ontology.from_data(data).to_dict() == data


def test_exemplars_in_a_file_record_hash_and_box(tmp_path):
    import hashlib

    (tmp_path / "ex").mkdir()
    photo = _photo(tmp_path / "ex" / "a.png")
    path = tmp_path / "ont.json"
    path.write_text(json.dumps({"classes": [
        {"name": "widget", "exemplars": [{"image": "ex/a.png", "box": [1, 2, 20, 25]},
                                         {"image": "ex/a.png", "box": [0, 0, 5, 5], "negative": True}]},
        {"name": "car", "negatives": ["toy car"]},
    ]}))
    ont = Ontology.from_file(path)
    widget = ont.classes[0]
    assert widget.prompts == ()  # exemplars alone define it
    assert [e.negative for e in widget.exemplars] == [False, True]
    assert widget.exemplars[0].image == str(tmp_path / "ex" / "a.png")
    assert widget.exemplars[0].sha256 == hashlib.sha256(photo.read_bytes()).hexdigest()
    assert ont.queries == ["car"] and ont.negative_queries == ["toy car"]
    # Columns: text prompts, exemplar classes, negative prompts, negative exemplar classes.
    assert ont.positive_class_ids.tolist() == [1, 0]
    assert ont.negative_class_ids.tolist() == [1, 0]
    recorded = ont.to_dict()
    assert recorded["classes"][0]["exemplars"][0] == {
        "image": str(tmp_path / "ex" / "a.png"), "sha256": widget.exemplars[0].sha256, "box": [1.0, 2.0, 20.0, 25.0]}
    photo.unlink()  # a recorded ontology (a run's config) parses without its images
    assert Ontology.from_data(recorded) == ont


def test_a_changed_exemplar_image_changes_the_recorded_ontology(tmp_path):
    photo = _photo(tmp_path / "a.png")
    before = Ontology.from_data([{"name": "w", "exemplars": [{"image": str(photo), "box": [0, 0, 9, 9]}]}])
    _photo(photo, seed=1)
    after = Ontology.from_data([{"name": "w", "exemplars": [{"image": str(photo), "box": [0, 0, 9, 9]}]}])
    assert before.to_dict() != after.to_dict()


@pytest.mark.parametrize(
    "exemplar, message",
    [
        ({"image": "a.png", "box": [0, 0, 50, 10]}, "reaches outside"),  # the image is 40 x 30
        ({"image": "a.png", "box": [10, 0, 5, 10]}, "x0 < x1"),  # an inverted box
        ({"image": "a.png", "box": [0, 0, 5]}, "four numbers"),  # three numbers
        ({"image": "missing.png", "box": [0, 0, 5, 5]}, "exemplar image"),  # no such file
        ({"image": "a.png"}, "needs an 'image' and a 'box'"),  # no box
        ({"image": "a.png", "box": [0, 0, 5, 5], "negative": "yes"}, "true or false"),  # not a bool
    ],
)
def test_bad_exemplars_are_clear_errors(tmp_path, exemplar, message):
    _photo(tmp_path / "a.png")
    with pytest.raises(ConfigError, match=message):
        Ontology.from_data([{"name": "w", "exemplars": [exemplar]}], base=tmp_path)


def test_a_class_with_only_negative_exemplars_keeps_its_name_as_prompt(tmp_path):
    _photo(tmp_path / "a.png")
    only_negative = {"name": "w", "prompts": [], "exemplars": [{"image": "a.png", "box": [0, 0, 5, 5], "negative": True}]}
    assert Ontology.from_data([only_negative], base=tmp_path).queries == ["w"]  # the name stays its prompt


def test_exemplars_file_merges_into_the_ontology(tmp_path):
    from autolabel.ontology import add_exemplars

    _photo(tmp_path / "a.png")
    path = tmp_path / "exemplars.json"
    path.write_text(json.dumps([
        {"image": "a.png", "box": [1, 1, 10, 10], "class": "car"},
        {"image": "a.png", "box": [2, 2, 12, 12], "class": "car", "negative": True},
        {"image": "a.png", "box": [5, 5, 30, 20], "class": "widget"},
    ]))
    ont = add_exemplars(Ontology.from_prompts(["car", "person"]), path)
    assert ont.names == ["car", "person", "widget"]
    assert ont.classes[0].prompts == ("car",) and len(ont.classes[0].exemplars) == 2
    assert ont.classes[2].prompts == ()
    assert ont.positive_class_ids.tolist() == [0, 1, 0, 2]
    assert ont.negative_class_ids.tolist() == [0]
    assert add_exemplars(None, path).names == ["car", "widget"]  # exemplars alone make an ontology
    path.write_text(json.dumps([{"image": "a.png", "box": [1, 1, 10, 10]}]))
    with pytest.raises(ConfigError, match="needs a 'class'"):
        add_exemplars(None, path)


def test_with_exemplars_adds_to_existing_classes_and_appends_new_ones(tmp_path):
    from autolabel.ontology import Exemplar, with_exemplars

    _photo(tmp_path / "a.png")
    first, second = Exemplar(str(tmp_path / "a.png"), (1, 1, 10, 10)), Exemplar(str(tmp_path / "a.png"), (2, 2, 9, 9))
    base = with_exemplars(Ontology.from_prompts(["car", "person"]), {"car": [first]})
    merged = with_exemplars(base, {"gadget": [second], "car": [second], "widget": [first]})
    assert merged.names == ["car", "person", "gadget", "widget"]
    assert merged.classes[0].exemplars == (first, second) and merged.classes[0].prompts == ("car",)
    assert merged.classes[2].prompts == () and merged.classes[2].exemplars == (second,)
    assert with_exemplars(None, {"widget": [first]}).names == ["widget"]
    assert with_exemplars(base, {}) == base
    with pytest.raises(ConfigError, match="no classes"):
        with_exemplars(None, {})


def test_column_constants_are_computed_once_and_read_only():
    ont = Ontology.from_classes([{"name": "car", "prompts": ["car", "van"], "negatives": ["toy car"],
                                  "threshold": 0.4}, {"name": "person"}])
    assert ont.positive_class_ids is ont.positive_class_ids and ont.negative_class_ids is ont.negative_class_ids
    assert ont.positive_class_ids.tolist() == [0, 0, 1] and ont.negative_class_ids.tolist() == [0]
    assert ont.thresholds(0.1) is ont.thresholds(0.1)
    np.testing.assert_array_equal(ont.thresholds(0.1), np.array([0.4, 0.1], np.float32))
    np.testing.assert_array_equal(ont.thresholds(0.25), np.array([0.4, 0.25], np.float32))
    assert ont.thresholds(0.25).dtype == np.float32
    for shared in (ont.positive_class_ids, ont.query_class_ids, ont.thresholds(0.1)):
        with pytest.raises(ValueError):
            shared[0] = 5  # a cached array is shared by every caller: nobody may change it
    # The cache is no part of what an ontology is: equal ontologies stay equal and hash alike.
    fresh = Ontology.from_data(ont.to_dict())
    assert fresh == ont and hash(fresh) == hash(ont) and fresh.to_dict() == ont.to_dict()


def test_load_ontology_takes_prompts_or_a_file_and_merges_exemplars(tmp_path):
    from autolabel.ontology import load_ontology

    _photo(tmp_path / "a.png")
    exemplars = tmp_path / "exemplars.json"
    exemplars.write_text(json.dumps([{"image": "a.png", "box": [1, 1, 10, 10], "class": "widget"}]))
    ontology_file = tmp_path / "ontology.yaml"
    ontology_file.write_text("car: [car, van]\n")
    assert load_ontology(["car", "person"]).names == ["car", "person"]
    assert load_ontology((), ontology_file).queries == ["car", "van"]
    assert load_ontology(["car"], None, exemplars).names == ["car", "widget"]
    assert load_ontology((), None, exemplars).classes[0].prompts == ()
    with pytest.raises(ConfigError, match="not both"):
        load_ontology(["car"], ontology_file)
    with pytest.raises(ConfigError, match="give classes"):
        load_ontology()
