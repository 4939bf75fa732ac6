"""Finding faces: YuNet and MTCNN, and the face crops every task model reads."""
