"""Stage 1, data: the mask store and what goes in and out of it.

Takes a dataset on disk (PASCAL VOC layout or a plain folder: images, proxy masks, ground truth,
saliency maps, tags) and gives an HDF5 mask store (``store``) that every later stage reads.
``importing`` fills it, ``export`` writes masks back out, ``info`` summarizes it, ``workarea``
keeps resumable partial results beside it, ``demo_data`` makes the synthetic demo dataset.
Only ``store`` imports h5py.
"""
