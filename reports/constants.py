"""Dimension lists used to lay out tables and to flag absent dimensions (display only; no scoring happens here).

VBench v1: 7 Quality + 9 Semantic dimensions (``docs``: shared reference vbench.md §1.1, §1.6).
VBench-2.0: 18 dimensions in 5 categories (§3.1).
"""

VBENCH_QUALITY = ["subject_consistency", "background_consistency", "temporal_flickering", "motion_smoothness",
                  "dynamic_degree", "aesthetic_quality", "imaging_quality"]
VBENCH_SEMANTIC = ["object_class", "multiple_objects", "human_action", "color", "spatial_relationship", "scene",
                   "appearance_style", "temporal_style", "overall_consistency"]
VBENCH_DIMENSIONS = VBENCH_QUALITY + VBENCH_SEMANTIC

VBENCH2_CATEGORIES = {
    "Human Fidelity": ["Human_Anatomy", "Human_Identity", "Human_Clothes"],
    "Creativity": ["Diversity", "Composition"],
    "Controllability": ["Dynamic_Spatial_Relationship", "Dynamic_Attribute", "Motion_Order_Understanding",
                        "Human_Interaction", "Complex_Landscape", "Complex_Plot", "Camera_Motion"],
    "Commonsense": ["Motion_Rationality", "Instance_Preservation"],
    "Physics": ["Mechanics", "Thermotics", "Material", "Multi-View_Consistency"],
}
VBENCH2_DIMENSIONS = [d for dims in VBENCH2_CATEGORIES.values() for d in dims]
