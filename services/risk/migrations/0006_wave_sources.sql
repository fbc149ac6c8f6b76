-- The stuffing watch reads the failed sign-ins of every /24 and /48 in the wave window
-- every few seconds; without this it would scan every dimension's rows of the window.
create index counters_subnets_by_age on counters (bucket) where dimension = 'subnet';
