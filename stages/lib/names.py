"""Names that are interface (dvc.yaml's foreach keys, params sections, output paths), defined
once. Their wording for people is the report's business (stages/templates/)."""

# train@<model> and tsne@<model>: each model and the dataset it is trained on
MODEL_DATASETS = {"simple_cnn": "mnist", "alexnet": "cifar10"}

# transfer@<strategy>: the ResNet-50 strategies that train
TRAINED_STRATEGIES = ("scratch", "finetune", "finetune_aug")

# all four transfer strategies (the SVM on frozen features included), in the order the
# metrics, plots and report list them
STRATEGIES = ("scratch", "svm", "finetune", "finetune_aug")
