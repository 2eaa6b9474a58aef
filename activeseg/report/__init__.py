"""The campaign report: one self-contained HTML page (jinja2, matplotlib) of a workspace, written at the
end of every round, by ``make demo`` and by ``activeseg report``; and the comparison page of ``activeseg
benchmark`` and ``simulate``. :mod:`.campaign` gathers the data, :mod:`.figures` draws, :mod:`.page` renders."""
