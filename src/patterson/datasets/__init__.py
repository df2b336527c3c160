"""Datasets: training examples (input map → target map) made from real structures, stored as HDF5, and read back.

A dataset is a folder (see docs/datasets.md for every field)::

    DS/config.json            the GenerateConfig (written first; a rerun with another config is refused)
    DS/shards/train-00000.h5  chunk_size examples each, written whole (temporary file + rename)
    DS/dataset.h5             written last: HDF5 virtual datasets joining the shards of each split into one
                              array per field (groups train/, val/, test/), with the config, package version,
                              normalisation constants and source summary as attributes

Generation is deterministic: every example depends only on the config (seed included), never on the number of
workers or on interruptions. Killed at any point, ``generate`` run again keeps the finished shards and makes only
the missing ones, so the final dataset holds exactly ``n`` examples.
"""

from patterson.datasets.config import (
    EXAMPLE_FIELDS,
    FIELDS,
    INPUTS,
    KINDS,
    PRESETS,
    SPLITS,
    TARGETS,
    GenerateConfig,
    describe_config,
    load_config,
    make_config,
)
from patterson.datasets.crystal_pairs import CropCorruption, CrystalPhaseErrorMaps
from patterson.datasets.generate import (
    GenerateSummary,
    compute_maps,
    config_for_test_split,
    generate,
    make_examples,
    make_test_split,
    plan_slots,
    random_atoms_in_cell,
    split_entries,
)
from patterson.datasets.sources import (
    Pool,
    assign_splits,
    build_pool,
    crystal_default_sources,
    read_aflow_prototypes,
    source_entries,
    source_files,
    split_counts,
)
from patterson.datasets.store import (
    Augmentation,
    MapDataset,
    OnTheFlyMaps,
    PhaseErrorMaps,
    StoredDataset,
    dataset_info,
    format_info,
    open_split,
)

__all__ = [
    "CropCorruption",
    "CrystalPhaseErrorMaps",
    "EXAMPLE_FIELDS",
    "FIELDS",
    "INPUTS",
    "KINDS",
    "PRESETS",
    "SPLITS",
    "TARGETS",
    "GenerateConfig",
    "GenerateSummary",
    "MapDataset",
    "Augmentation",
    "OnTheFlyMaps",
    "PhaseErrorMaps",
    "Pool",
    "StoredDataset",
    "split_entries",
    "assign_splits",
    "build_pool",
    "compute_maps",
    "config_for_test_split",
    "make_test_split",
    "make_examples",
    "crystal_default_sources",
    "dataset_info",
    "describe_config",
    "format_info",
    "generate",
    "load_config",
    "make_config",
    "open_split",
    "plan_slots",
    "random_atoms_in_cell",
    "read_aflow_prototypes",
    "source_entries",
    "source_files",
    "split_counts",
]
