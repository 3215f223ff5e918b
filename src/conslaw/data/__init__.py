"""Dataset readers (CIFAR-10 python batches, aclImdb) and labelled synthetic stand-ins."""
