import random

import open_clip
import pytest
from transformers import CLIPTokenizer

from sdi import PROMPT
from sdi.models.tokenizer import placeholder_position, write_clip_tokenizer

EOT = 49407


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tok")
    write_clip_tokenizer(folder)
    return CLIPTokenizer.from_pretrained(folder)  # the path real checkouts take


def _until_eot(ids: list[int]) -> list[int]:
    return ids[: ids.index(EOT) + 1]


def test_vocabulary_size(tokenizer):
    assert len(tokenizer) == 49408
    assert tokenizer.model_max_length == 77


def test_same_ids_as_open_clip(tokenizer):
    words = ("a photo of the Black footed Albatross Laysan Sooty Crested Auklet bird's wing 3 "
             "blue-winged x-ray café naïve don't, CAPS Tree! hello?? 1995 (small) 12.5% résumé "
             "über dog cat Yellow_headed Blackbird 001.Black").split()
    rng = random.Random(0)
    sentences = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 25))) for _ in range(300)]
    sentences += [" ".join(words) * 3]  # longer than 77 tokens: both truncate keeping EOT
    ref = open_clip.tokenize(sentences)
    ours = tokenizer(sentences, padding="max_length", max_length=77, truncation=True).input_ids
    for sentence, r, o in zip(sentences, ref.tolist(), ours, strict=True):
        assert _until_eot(o) == _until_eot(r), sentence
        assert len(o) == 77 and set(o[len(_until_eot(o)):]) <= {EOT}


def test_method_prompt_ids_and_placeholder(tokenizer):
    ids = tokenizer(PROMPT, padding="max_length", max_length=77).input_ids
    assert ids[:10] == [49406, 320, 1400, 3027, 1125, 539, 320, 1874, 269, 49407]
    assert ids[10:] == [EOT] * 67
    assert placeholder_position(tokenizer) == 7
    assert tokenizer.convert_ids_to_tokens(ids[7]) == "class</w>"


def test_prompt_without_placeholder_is_rejected(tokenizer):
    with pytest.raises(ValueError, match="class"):
        placeholder_position(tokenizer, "a photo of a bird")
