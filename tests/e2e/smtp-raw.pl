#!/usr/bin/perl
# A minimal SMTP client for what swaks cannot do: send the given commands
# exactly, e.g. MAIL without any HELO/EHLO (swaks always sends EHLO).
#
#   smtp-raw.pl PORT COMMAND...
#
# Connects to 127.0.0.1:PORT, reads the greeting, then sends each COMMAND
# and reads its (possibly multi-line) reply; ends with QUIT. The transcript
# uses swaks' markers (" -> " client, "<-  " server, "<** " error reply) so
# that run.sh's reply_to() reads it. Every read is bounded (10 s).
use strict;
use warnings;
use IO::Socket::INET;

my ($port, @commands) = @ARGV;
die "usage: $0 PORT COMMAND...\n" unless $port && @commands;
my $sock = IO::Socket::INET->new(
    PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp', Timeout => 10,
) or die "connect 127.0.0.1:$port: $@\n";
$| = 1;

sub reply {
    my @lines;
    while (1) {
        my $line;
        eval {
            local $SIG{ALRM} = sub { die "timeout\n" };
            alarm 10;
            $line = <$sock>;
            alarm 0;
        };
        die "no reply within 10 s\n" if $@;
        die "connection closed\n" unless defined $line;
        $line =~ s/\r?\n\z//;
        push @lines, $line;
        last if $line =~ /^\d{3}(?: |\z)/;
    }
    for my $line (@lines) {
        my $mark = $line =~ /^[45]/ ? '<** ' : '<-  ';
        print "$mark$line\n";
    }
}

reply();
for my $cmd (@commands, 'QUIT') {
    print " -> $cmd\n";
    print $sock "$cmd\r\n";
    reply();
}
