"""TFDS builder `ucf101_frames`: UCF-101 from the archives as published."""

from pasnet_jax.data import frames_builder
from pasnet_jax.data import splits


class Ucf101Frames(frames_builder.VideoFramesBuilder):
  """UCF-101: 13,320 videos of 101 actions, as JPEG frames (short side 256).

  Configs split1..split3 are the official train/test splits. Labels follow
  classInd.txt (0-based); `name` is "<Class>/<video stem>" as in the lists.
  """
  name = 'ucf101_frames'
  CLASS_NAMES = splits.UCF101_CLASSES
  VIDEO_SOURCES = ('UCF101.rar', 'UCF-101', 'UCF101')
  SPLIT_SOURCES = ('UCF101TrainTestSplits-RecognitionTask.zip',
                   'ucfTrainTestlist')
  HOMEPAGE = 'https://www.crcv.ucf.edu/data/UCF101.php'
  CITATION = """@article{soomro2012ucf101,
  title={{UCF101}: A dataset of 101 human actions classes from videos in the wild},
  author={Soomro, Khurram and Zamir, Amir Roshan and Shah, Mubarak},
  journal={arXiv preprint arXiv:1212.0402},
  year={2012}}"""
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  Download from https://www.crcv.ucf.edu/data/UCF101.php and put in the
  manual directory, as published:
    UCF101.rar                                    (or its folder UCF-101/)
    UCF101TrainTestSplits-RecognitionTask.zip     (or its folder ucfTrainTestlist/)
  Reading its compressed RAR members needs bsdtar (libarchive-tools, which
  scripts/setup.sh installs) or RARLAB's unrar.
  """

  def _listed_videos(self, files, source):
    return splits.ucf101_split(files, self.builder_config.split_number, source)
