"""The four classes of the ALL image dataset, in the order every model outputs them."""

CLASS_FOLDERS: tuple[str, ...] = ("Benign", "Early", "Pre", "Pro")
DISPLAY_NAMES: dict[str, str] = {
    "Benign": "Benign",
    "Early": "Early Pre-B",
    "Pre": "Pre-B",
    "Pro": "Pro-B",
}
CLASS_NAMES: tuple[str, ...] = tuple(DISPLAY_NAMES[c] for c in CLASS_FOLDERS)
N_CLASSES = len(CLASS_FOLDERS)

DATASET_CITATION = (
    "Aria M., Ghaderzadeh M., Bashash D., Abolghasemi H., Asadi F., Hosseini A., "
    '"Acute Lymphoblastic Leukemia (ALL) image dataset", Kaggle (2021); '
    "Ghaderzadeh M. et al., \"A fast and efficient CNN model for B-ALL diagnosis and its "
    'subtypes classification using peripheral blood smear images", Int J Intell Syst 37(8) (2022).'
)
PAPER_CITATION = (
    "Sultana N., Joya S. G., Hasan M., \"Performance evaluation of CNN models using transfer "
    'learning and ensemble approaches for automated leukemia diagnosis".'
)
