"""The training recipes, one module per ``liverctl train --method`` name: :mod:`~.he2021`,
:mod:`~.sdnet`, :mod:`~.di2in_an` (``di2in-an``), :mod:`~.hdenseunet` (with its coarse
liver-ROI stage, :mod:`~.cascade`) and :mod:`~.pipofan`. Each says what one iteration does
and drives the one run loop of :mod:`liverctl.training.run`; :mod:`liverctl.training.methods`
maps the method names to them."""
