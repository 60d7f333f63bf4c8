"""Learning from the clinic: corrections -> local training set -> candidate model -> promoted version."""
