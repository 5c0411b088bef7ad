"""The pages' shared chart geometry (cytoloop.charts): pure, no database."""

from cytoloop import charts


def test_a_frame_maps_shares_to_the_plot_area_inside_its_margins():
    frame = charts.Frame(width=200, height=100, left=20, right=10, top=5, bottom=15)
    assert (frame.x(0), frame.x(1), frame.y(0), frame.y(1)) == (20, 190, 85, 5)
    assert frame.box() == {"width": 200, "height": 100, "left": 20, "right": 190, "top": 5, "bottom": 85,
                           "center_x": 105}


def test_a_line_path_moves_once_then_draws_to_each_point_at_one_decimal():
    assert charts.line_path([(1, 2.25), (3.04, 4)]) == "M1.0,2.2 L3.0,4.0"
    assert charts.line_path([]) == ""


def test_axis_maxima_and_count_ticks_are_round():
    assert [charts.nice_max(v) for v in (0.93, 1.575, 7, 0)] == [1.0, 2.0, 8, 1.0]
    assert charts.int_ticks(7) == [0, 2, 4, 6, 8] and charts.int_ticks(0) == [0, 1]
    ticks = charts.y_ticks(charts.Frame(100, 100, 0, 0, 0, 100 - 40), (0, 1))
    assert ticks == [{"share": 0, "y": 40, "text_y": 44}, {"share": 1, "y": 0, "text_y": 4}]
