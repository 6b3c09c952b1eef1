#!/usr/bin/perl
# The hook relay of hook-relay.ts, for hosts with Perl (git's own packages depend on it): the
# same request, answer and failure rules, started in about a tenth of Node's CPU time. A push
# through a storage node runs it once per ref transaction (reference-transaction `prepared`), and
# every push runs it twice. installHooks() uses it when Perl and these core modules load, the
# Node relay otherwise; src/git/hooks.test.ts runs both against the same server.
#
# argv: <hook name> <default socket path> [hook arguments...]
use strict;
use warnings;
use Cwd ();
use IO::Socket::UNIX;
use JSON::PP;

my ($hook, $default_socket, @args) = @ARGV;
$hook //= '';
$default_socket //= '';
# In pre-receive the pushed objects are still in quarantine; the server needs these to see them.
my %quarantine = map { $_ => 1 } qw(GIT_QUARANTINE_PATH GIT_OBJECT_DIRECTORY GIT_ALTERNATE_OBJECT_DIRECTORIES);
my $socket_path = $ENV{GITSTRATUM_HOOK_SOCKET} || $default_socket;
$SIG{PIPE} = 'IGNORE';

# Text as the Node relay reads it: UTF-8 where it is valid.
sub text {
  my ($s) = @_;
  utf8::decode($s);
  return $s;
}

sub say_err {
  my ($m) = @_;
  utf8::encode($m) if utf8::is_utf8($m);
  print STDERR $m;
}

# No server answered: hooks fail closed, exactly as unanswered() in hook-relay.ts says why.
sub unanswered {
  if ($hook eq 'reference-transaction') {
    if (($args[0] // '') eq 'prepared' && $ENV{GITSTRATUM_SHARD_EPOCH}) {
      say_err("gitstratum: the storage node that received this push is gone; push not applied, retry it\n");
      exit 1;
    }
    exit 0;
  }
  if ($hook eq 'pre-receive') {
    say_err("gitstratum: the server cannot be reached to check this push; push refused (is gitstratum running?)\n");
    exit 1;
  }
  say_err("gitstratum: the server cannot be reached; $hook skipped (no audit entry or snapshot mark for this push)\n");
  exit 0;
}

binmode STDIN;
my $stdin = do { local $/; <STDIN> } // '';
my %env;
for my $k (keys %ENV) {
  $env{$k} = text($ENV{$k}) if $k =~ /^(?:GITSTRATUM_|GIT_PUSH_OPTION)/ || $quarantine{$k};
}
my $request = JSON::PP->new->utf8->encode({
  hook => text($hook),
  args => [map { text($_) } @args],
  stdin => text($stdin),
  env => \%env,
  cwd => text(Cwd::getcwd()),
});

my $socket = IO::Socket::UNIX->new(Type => SOCK_STREAM, Peer => $socket_path) or unanswered();
print {$socket} $request, "\n" or unanswered();
$socket->shutdown(1);
my $answer = do { local $/; <$socket> } // '';
close $socket;
my $parsed = eval { JSON::PP->new->utf8->decode($answer) };
unanswered() unless ref $parsed eq 'HASH' && defined $parsed->{code};
if (defined $parsed->{message} && length $parsed->{message}) {
  my $m = $parsed->{message};
  say_err($m =~ /\n\z/ ? $m : "$m\n");
}
# The server could not record a committed transaction: git ignores this hook's status there, so
# the git process that ran it (its parent) is stopped before it reports the push as done.
kill 'KILL', getppid() if $parsed->{abort} && getppid() > 1;
exit $parsed->{code};
