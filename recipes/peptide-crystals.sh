#!/bin/sh
# Synthetic peptide crystals (issue #30): every phasing method at equal wall time on held-out `peptide-crystal`
# structures at 1.0, 1.5 and 2.0 Å → benchmarks/results/peptide_crystals.json and
# docs/tables/peptide_crystals_table.md (docs/phasing.md, "Peptide crystals at equal wall time").
# Run from the repository root on an otherwise idle 2-core machine (two workers of one torch thread each).
set -e

# a first look at the times (16 crystals per resolution)
python benchmarks/peptide_crystals.py --n 16 --budget-s 10 \
    --out /tmp/peptide_crystals_n16.json --table /tmp/peptide_crystals_n16.md

# the run the docs quote (the "command" under "run" in the results file): 48 crystals per resolution at 10 s per
# method, maps stored on a 96-point grid so every 1.0 Å crystal is at 1.0 Å (3,500 s wall: 107 s generating,
# 3,367 s phasing; dual-space's atoms step at 1.0 Å included)
python benchmarks/peptide_crystals.py --n 48 --budget-s 10

# dual-space with three and six times the budget, dual-space and chance alone at 1.0 Å (6 and ~10 minutes)
# → benchmarks/results/peptide_crystals_dual30.json, peptide_crystals_dual60.json
python benchmarks/peptide_crystals.py --methods dual-space chance --resolutions 1.0 --budget-s 30 \
    --out benchmarks/results/peptide_crystals_dual30.json --table /tmp/peptide_crystals_dual30.md
python benchmarks/peptide_crystals.py --methods dual-space chance --resolutions 1.0 --budget-s 60 \
    --out benchmarks/results/peptide_crystals_dual60.json --table /tmp/peptide_crystals_dual60.md

# the same 48 structures at 1.0 Å through `patterson evaluate` (one method; there the phasing grid is d / sample_rate)
# patterson generate --preset peptide-crystal --source ../shared/data/pdb --n 1920 --seed 0 \
#     --set 'splits=[0.95,0.025,0.025]' --set 'only_splits=["test"]' --set d_min=1.0 --set 'd_min_range=[1.0,1.0]' \
#     --set 'b_range=[5.0,5.0]' --set map_dtype=float32 --set chunk_size=24 --out data/peptide-1.0 --workers 2
# patterson evaluate --method charge-flip --data data/peptide-1.0 --out eval/peptide-cf

# the real peptides' fragment placements judged by the likelihood (#30): right and wrong placements of 5E5Z's and
# 1YJP's main chain refined against the LLG, how far the refinement reaches, and the 5-residue route (~7 minutes)
# → benchmarks/results/peptide_likelihood.json (docs/solving.md)
python benchmarks/peptide_likelihood.py

# the strand shapes the β-sheet search ships (~1 minute) → src/patterson/weights/strands.json,
# benchmarks/results/strand_conformers.json; then the sheet search on 5E5Z and 1YJP (~4 minutes)
# → benchmarks/results/peptide_sheets.json (docs/solving.md)
python benchmarks/strand_conformers.py
python benchmarks/peptide_sheets.py

# the "no extension" row: solve --sequence's fragments route (in cells with a 4.8/9.6 Å axis the β-sheet search,
# elsewhere ideal strands of windows of each crystal's own sequence; built out, no density modification) at 1.5
# and 2.0 Å, 60 s per crystal (~40 minutes)
# → benchmarks/results/peptide_crystals_fragments60.json (docs/phasing.md)
python benchmarks/peptide_crystals.py --methods fragments chance --resolutions 1.5 2.0 --budget-s 60 \
    --out benchmarks/results/peptide_crystals_fragments60.json --table /tmp/peptide_crystals_fragments60.md

# the verdict for refined models (#30): every model the fragments route builds on 24 val crystals per resolution
# (1.5 and 2.0 Å) of peptide-crystal-realistic (measurement error rising with resolution, ordered waters), its q = R-free / R-free(random) beside its truth; the thresholds MODEL_SOLVED_RATIO and
# MODEL_UNSOLVED_RATIO in phasing/validation.py come from it (~70 minutes on 2 workers); rerun it after any
# change to the route's final model, then set the constants (tests/test_validation.py ties them to the JSON)
# → benchmarks/results/model_verdict.json (docs/evaluation.md)
python benchmarks/model_verdict.py --n 24

# the fragments route as it ships (the β-sheet search, building, likelihood rebuilding; 180 s of building budget,
# the route's default) on 12 test crystals per resolution, its claims judged by the model verdict (~35 minutes)
# → benchmarks/results/peptide_crystals_fragments.json (docs/phasing.md)
python benchmarks/peptide_crystals.py --methods fragments chance --resolutions 1.5 2.0 --n 12 --budget-s 180 \
    --out benchmarks/results/peptide_crystals_fragments.json --table /tmp/peptide_crystals_fragments.md
# the same on realistic crystals (the data the model verdict is calibrated on), with the route's phases extended by
# the learned step and by its control (~42 minutes)
# → benchmarks/results/peptide_crystals_fragments_realistic.json (docs/phasing.md)
python benchmarks/peptide_crystals.py --methods fragments fragments+learned fragments+histogram chance \
    --resolutions 1.5 2.0 --n 12 --budget-s 180 \
    --preset peptide-crystal-realistic --out benchmarks/results/peptide_crystals_fragments_realistic.json \
    --table /tmp/peptide_crystals_fragments_realistic.md
# the 48-crystal row at 1.5 Å (the first 12 are the crystals above; ~90 minutes on an otherwise idle machine)
# → benchmarks/results/peptide_crystals_fragments_realistic48.json (docs/phasing.md)
python benchmarks/peptide_crystals.py --methods fragments fragments+learned fragments+histogram chance \
    --resolutions 1.5 --n 48 --budget-s 180 --preset peptide-crystal-realistic \
    --out benchmarks/results/peptide_crystals_fragments_realistic48.json \
    --table /tmp/peptide_crystals_fragments_realistic48.md

# the learned extension (#30): partial models of held-out realistic crystals extended by the peptide-crystal step
# (recipes/peptide-modifier.toml), the dense-protein step and the control. First the cycles, chosen on val crystals
# (the entries the networks validated on; 4 minutes each → benchmarks/results/peptide_extension_val_*.json), then
# the result on the test crystals (5 minutes)
# → benchmarks/results/peptide_extension.json, docs/tables/peptide_extension_table.md (docs/phasing.md)
for cycles in "10 0" "20 0" "40 20"; do
    set -- $cycles
    python benchmarks/peptide_extension.py --split val --n 6 --n-iter "$1" --n-finish "$2" \
        --out "benchmarks/results/peptide_extension_val_$1_$2.json" --table "/tmp/peptide_extension_val_$1_$2.md"
done
python benchmarks/peptide_extension.py --n 24
