"""benchmarks/end_to_end.py's row syntax, which run.sh's and the README's
commands rely on."""

import pytest

from benchmarks import end_to_end


def test_rows_take_their_own_size_or_the_default():
  assert end_to_end.parse_rows('A:4:16:32,A+pool(I)+pool(F):16:64', 224) == [
      ('A', 4, 16, 32), ('A+pool(I)+pool(F)', 16, 64, 224)]


def test_default_rows_parse():
  assert len(end_to_end.parse_rows(end_to_end.DEFAULT_ROWS, 224)) == 2


@pytest.mark.parametrize('row', ['A:4', 'A:4:16:32:1'])
def test_a_row_of_the_wrong_shape_is_refused(row):
  with pytest.raises(ValueError, match='fusion:K:batch'):
    end_to_end.parse_rows(row, 224)
