"""The summary table: counts per part and FLOPs that add up."""

from pasnet_jax import summary


def test_parts_add_up_to_the_whole_model():
  rows = summary.part_table('A+pool(I)+pool(F)', frames=2, size=64, num_classes=10)
  by_name = {name.split(' ')[0]: (params, flops) for name, params, flops in rows}
  assert by_name['appearance'][0] == 681_568
  assert by_name['pose'][0] == 52_311_446
  assert by_name['spatiotemporal'][0] == 36_617_088
  parts = sum(flops for name, _, flops in rows[:-1])
  total = rows[-1][2]
  assert abs(parts - total) < 0.05 * total
  # OpenPose dominates the cost, as the architecture notes say.
  assert by_name['pose'][1] > 0.8 * total
  table = summary.format_table(rows, 'A+pool(I)+pool(F)', 2, 64)
  assert 'pose (OpenPose)' in table and '52,311,446' in table
