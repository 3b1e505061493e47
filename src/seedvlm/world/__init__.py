"""The embedded synthetic world (docs/design.md section 5): COCO-named glyph objects in scene types with strong
co-occurrence, written in COCO instances/captions and LLaVA-Instruct formats, with a set rate of annotator
hallucination in the training descriptions. See docs/world.md.

Public API:
    WorldConfig, generate_world(cfg, out_dir) -> summary dict, load_world(dir) -> dict
    sample_scene(rng, size, uniform=False, ...) -> Scene, render_scene(scene, size) -> (H, W, 3) uint8
    Scene, SceneObject, CATEGORIES, SCENES, category_by_name, world_vocabulary()
"""

from seedvlm.world.categories import (
    CATEGORIES,
    CATEGORY_NAMES,
    COLOR_NAMES,
    COLORS,
    SCENE_NAMES,
    SCENES,
    SYNONYMS,
    SceneType,
    category_by_id,
    category_by_name,
    partners_of,
    plural,
    scene_by_name,
    strong_pairs,
)
from seedvlm.world.generate import WorldConfig, generate_world, load_world
from seedvlm.world.scenes import Scene, SceneObject, render_scene, sample_scene
from seedvlm.world.text import tokenize, world_vocabulary

__all__ = [
    "CATEGORIES", "CATEGORY_NAMES", "COLORS", "COLOR_NAMES", "SCENES", "SCENE_NAMES", "SYNONYMS", "Scene",
    "SceneObject", "SceneType", "WorldConfig", "category_by_id", "category_by_name", "generate_world", "load_world",
    "partners_of", "plural", "render_scene", "sample_scene", "scene_by_name", "strong_pairs", "tokenize",
    "world_vocabulary",
]
