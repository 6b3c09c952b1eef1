#!/usr/bin/perl
# Sits between fcgiwrap and `git http-backend` in the benchmark, so the CPU of the backend
# and of every git process it starts is counted. fcgiwrap workers ignore SIGCHLD, and a CGI
# inherits that: its exited children are then reaped by the kernel and their CPU reaches no
# parent's cutime/cstime. This wrapper restores the default SIGCHLD disposition (inherited
# by the backend and its children in turn), runs the backend, waits for it, and appends the
# CPU seconds of its reaped children (user, system) to $BENCH_RUSAGE_LOG.
#
# It keeps stdout open until it has written the line, so the HTTP response ends only after
# the figures are on disk. Its own CPU (perl start-up) is not counted: it is the
# benchmark's cost, not the server's.
use strict;
use warnings;
use Fcntl qw(:flock);

$SIG{CHLD} = 'DEFAULT';
my $backend = $ENV{BENCH_HTTP_BACKEND} or die "BENCH_HTTP_BACKEND not set\n";
my $log = $ENV{BENCH_RUSAGE_LOG} or die "BENCH_RUSAGE_LOG not set\n";

my $pid = fork() // die "fork: $!\n";
if ($pid == 0) {
    exec { $backend } $backend or exit 127;
}
waitpid($pid, 0) == $pid or die "waitpid: $!\n";
my $status = $?;
my (undef, undef, $cuser, $csys) = times();
open(my $fh, '>>', $log) or die "open $log: $!\n";
flock($fh, LOCK_EX) or die "flock: $!\n";
printf $fh "%d %.2f %.2f %s %s\n", $pid, $cuser, $csys, $ENV{REQUEST_METHOD} // '-', $ENV{PATH_INFO} // '-';
close($fh);
exit($status & 127 ? 128 + ($status & 127) : $status >> 8);
