"""`bulkload load`: ① → ② → ③ → ④ → ⑤, one TaskGroup owning every task."""
