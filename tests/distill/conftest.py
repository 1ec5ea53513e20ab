import pytest
import torch

from rehyat.distill.data import make_synthetic_dataset


@pytest.fixture(autouse=True)
def _one_thread():
    # The tiny model's matrices are small: on a shared 2-core machine two intra-op threads make each step ~100x
    # slower than one.  Restore afterwards so other test modules keep their setting.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def tiny_dir():
    from rehyat.tiny import tiny_model_dir

    return tiny_model_dir()


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory):
    """Four smooth moving latents (16 x 3 x 8 x 8 -> 3 latent frames of 16 tokens) + random 32-d prompt embeddings."""
    return make_synthetic_dataset(tmp_path_factory.mktemp("synth"), num_items=4, latent_shape=(16, 3, 8, 8),
                                  text_dim=32, text_len=6, seed=0)


@pytest.fixture
def tiny_s1():
    """The tiny stage-1 setting the tests share: 5 latent frames of 16 tokens, ragged chunks (2, 2, 1), T_o = 1."""
    return dict(teacher="tiny", latent_frames=5, latent_height=8, latent_width=8, num_inference_steps=4,
               guidance_scale=1.0, max_sequence_length=16, chunk_frames=2, overlap_frames=1,
               feature_map_kwargs={"hidden_dim": 16, "feature_dim": 16}, progress=False, num_random_prompts=4,
                random_prompt_len=6)
