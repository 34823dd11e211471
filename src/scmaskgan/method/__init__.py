"""The scMASKGAN method: cells as images, labels, the networks, training, generation, the anomaly filter and imputation."""
