"""Sharded parameters over several host CPU devices give the single-device result."""

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np, optax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    import beta_optax

    assert jax.device_count() == 4, jax.devices()
    mesh = Mesh(np.array(jax.devices()), ("data",))
    sharded = NamedSharding(mesh, P("data"))
    schedule = optax.warmup_cosine_decay_schedule(0.0, 0.05, 10, 100)
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal((16, 3)).astype(np.float32) for _ in range(60)]

    def run(optimizer, place):
        params = {"w": place(jnp.ones((16, 3))), "b": place(jnp.zeros((16,)))}
        state = optimizer.init(params)
        update = jax.jit(optimizer.update)
        for g in grads:
            tree = {"w": place(jnp.asarray(g)), "b": place(jnp.asarray(g[:, 0]))}
            updates, state = update(tree, state, params)
            params = optax.apply_updates(params, updates)
        return params, state

    single = jax.devices()[0]
    for factory in (beta_optax.beta_sgd, beta_optax.hybrid_sgd, beta_optax.beta_adam):
        one, _ = run(factory(schedule), lambda x: jax.device_put(x, single))
        four, state = run(factory(schedule), lambda x: jax.device_put(x, sharded))
        assert len(four["w"].sharding.device_set) == 4, four["w"].sharding
        for leaf in jax.tree.leaves(state):
            if leaf.ndim:
                assert len(leaf.sharding.device_set) == 4, (factory.__name__, leaf.sharding)
        for a, b in zip(jax.tree.leaves(four), jax.tree.leaves(one)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=0)
    print("SHARDED_OK")
    """
)


def test_sharded_params_match_single_device():
    env = dict(os.environ)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    env["JAX_PLATFORMS"] = "cpu"

    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )

    assert result.returncode == 0, result.stderr[-3000:]
    assert "SHARDED_OK" in result.stdout
