"""Put on PYTHONPATH of subprocesses started by the tests (helpers.run_snakemake): any internet socket fails."""

import sdi_netguard

sdi_netguard.install(OSError)
