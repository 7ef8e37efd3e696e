from orca_jax.data.cli import main

main()
